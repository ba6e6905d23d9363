"""The contract of a frozen feature extractor (owned by uadflows.backbones)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ExtractorSpec:
    """Everything that changes the features, so it keys the feature cache.

    name: registry name of the set-up (e.g. "resnet18", "cait_m48_448", "ms_cait").
    image_size: (H, W) the images are resized to before the backbone.
    channels / shapes: per output scale, C and (H, W) of the feature maps.
    mean / std: normalisation applied inside the extractor to images in [0, 1].
    weights: identifier of the weights ("random", "timm:<tag>", "file:<sha256[:16]>", ...).
    layers: which layers/blocks feed the outputs, as a short string.
    """

    name: str
    image_size: tuple[int, int]
    channels: tuple[int, ...]
    shapes: tuple[tuple[int, int], ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str
    layers: str

    def key(self) -> str:
        """A readable, filesystem-safe cache key: name, size and a hash of the rest."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        h, w = self.image_size
        return f"{self.name}_{h}x{w}_{hashlib.sha256(blob).hexdigest()[:10]}"


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
