"""What an extractor gives, as data (torch-free: the plan keys feature caches with it)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass


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
