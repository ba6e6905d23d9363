"""Frozen timm CNNs (``features_only``) behind the Extractor contract."""

from __future__ import annotations

import torch
from torch import nn

from uadflows.backbones import weights as W
from uadflows.backbones.base import Extractor, ExtractorSpec


class FrozenExtractor(Extractor):
    """Shared plumbing: frozen, always in eval mode, normalises [0, 1] images itself and
    checks their size against the spec (a wrong size would silently change the features)."""

    def __init__(self, spec: ExtractorSpec):
        super().__init__()
        self.spec = spec
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)

    def freeze(self) -> "FrozenExtractor":
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "FrozenExtractor":
        return super().train(False)  # frozen: batch-norm statistics and dropout never move

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"backbone {self.spec.name}: expected images (B, 3, H, W), got {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != tuple(self.spec.image_size):
            raise ValueError(
                f"backbone {self.spec.name}: images are {tuple(images.shape[-2:])}, its spec says "
                f"{tuple(self.spec.image_size)} (resize first, or build it with that image_size)"
            )
        return (images - self.mean) / self.std


class CnnExtractor(FrozenExtractor):
    """timm ``features_only`` model: stages ``out_indices`` of the spec."""

    def __init__(self, spec: ExtractorSpec, model: nn.Module):
        super().__init__(spec)
        self.model = model
        self.freeze()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(self.normalise(images)))


def build_cnn(spec: ExtractorSpec, source: W.WeightsSource, out_indices: tuple[int, ...]) -> CnnExtractor:
    model = W.build_timm(source, features_only=True, out_indices=out_indices)
    return CnnExtractor(spec, model)
