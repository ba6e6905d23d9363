"""The features' own kNN: each test position's distance to its nearest training position
(PatchCore's scoring, Roth et al. CVPR 2022, without its coreset), one bank per scale."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable

import torch

from uadflows.backbones.base import Extractor
from uadflows.methods import register
from uadflows.methods.base import FlowMethod, FlowOutput, TrainSetup
from uadflows.methods.knn.anomaly_map import knn_anomaly_maps, nearest_distances
from uadflows.methods.knn.config import KnnConfig


def _positions(feature: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B*H*W, C): one row per spatial position."""
    return feature.permute(0, 2, 3, 1).reshape(-1, feature.shape[1])


@register("knn")
class KnnFloor(FlowMethod):
    """No training: ``fit`` stores every training position of every cached scale (or a
    seeded random subset of ``bank_size`` per scale) as buffers ``bank{s}`` (float16, the
    cache's precision, so nothing is lost); ``forward`` gives per-scale distance maps."""

    label = "kNN"
    config_class = KnnConfig
    default_backbone = "wide_resnet50_2"
    default_image_size = 256  # the recipe's (KnnConfig.image_size)
    fits_from_data = KnnConfig.fits_from_data  # the trainer calls ``fit`` once, no optimiser loop

    def __init__(self, backbone: Extractor, config: KnnConfig | None = None):
        super().__init__(backbone)
        config = config or KnnConfig()
        self.config = replace(config, image_size=tuple(backbone.spec.image_size))
        self.channels = [int(c) for c in backbone.spec.channels]
        for s, c in enumerate(self.channels):
            self.register_buffer(f"bank{s}", torch.empty(0, c, dtype=torch.float16))

    def banks(self) -> list[torch.Tensor]:
        return [getattr(self, f"bank{s}") for s in range(len(self.channels))]

    def _check(self, features: list[torch.Tensor]) -> None:
        if not isinstance(features, (list, tuple)) or len(features) != len(self.channels):
            got = len(features) if isinstance(features, (list, tuple)) else type(features).__name__
            raise ValueError(f"knn: expected a list of {len(self.channels)} feature maps, got {got}")
        for s, (f, c) in enumerate(zip(features, self.channels)):
            if f.dim() != 4 or f.shape[1] != c:
                raise ValueError(f"knn: feature map {s} has shape {tuple(f.shape)}; expected (B, {c}, H, W) "
                                 f"as extractor {self.backbone.spec.name!r} gives")

    @torch.no_grad()
    def fit(self, batches: Iterable[list[torch.Tensor]], generator: torch.Generator | None = None) -> None:
        """One pass over the training features -> the memory banks."""
        parts: list[list[torch.Tensor]] = [[] for _ in self.channels]
        for features in batches:
            self._check(features)
            for s, f in enumerate(features):
                parts[s].append(_positions(f).to(torch.float16))
        if not parts[0]:
            raise ValueError("knn.fit: no training features")
        for s, rows in enumerate(parts):
            bank = torch.cat(rows)
            size = self.config.bank_size
            if size is not None and bank.shape[0] > size:
                keep = torch.randperm(bank.shape[0], generator=generator)[:size]
                bank = bank[keep.sort().values.to(bank.device)]
            setattr(self, f"bank{s}", bank)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The banks' length is only known from the checkpoint: take its shape, then load.
        for s in range(len(self.channels)):
            saved = state_dict.get(f"{prefix}bank{s}")
            if saved is not None:
                setattr(self, f"bank{s}", torch.empty_like(saved, device=self.banks()[s].device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, features: list[torch.Tensor], with_log_jac: bool = True) -> FlowOutput:
        """Per scale s, ``z[s]`` (B, 1, H_s, W_s): distance to the nearest bank row."""
        self._check(features)
        maps = []
        for f, bank in zip(features, self.banks()):
            d = nearest_distances(_positions(f), bank, self.config.chunk)
            maps.append(d.reshape(f.shape[0], 1, f.shape[2], f.shape[3]))
        return FlowOutput(z=maps)

    def loss(self, out: FlowOutput) -> torch.Tensor:
        raise TypeError("knn has no training loss: it is fitted with fit(), in one pass over the cache")

    def train_setup(self, epochs: int, steps_per_epoch: int, lr: float | None = None) -> TrainSetup:
        raise TypeError("knn has no optimiser: it is fitted with fit(), in one pass over the cache")

    @classmethod
    def from_params(cls, extractor: Extractor, **params: Any) -> "KnnFloor":
        return cls(extractor, KnnConfig.from_kwargs(**params))

    def anomaly_maps(self, out: FlowOutput, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        return knn_anomaly_maps([z[:, 0] for z in out.z], tuple(size))
