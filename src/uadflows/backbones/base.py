"""The contract of a frozen feature extractor (owned by uadflows.backbones)."""

from __future__ import annotations

import torch
from torch import nn

from uadflows.backbones.spec import ExtractorSpec


class Extractor(nn.Module):
    """Frozen backbone: images in [0, 1] (B, 3, H, W) -> list of (B, C_s, H_s, W_s)."""

    spec: ExtractorSpec

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover
        raise NotImplementedError


class SpecOnlyExtractor(Extractor):
    """A weightless stand-in with the spec alone: training and scoring read cached
    features, so building (and holding) a CaiT-M48 there would be wasted time and memory."""

    def __init__(self, spec: ExtractorSpec):
        super().__init__()
        self.spec = spec

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        raise RuntimeError(
            f"backbone {self.spec.name} was built without weights (build_backbone=False): "
            "features come from the feature cache"
        )
