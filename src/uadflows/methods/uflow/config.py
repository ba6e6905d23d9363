"""U-Flow's typed configuration (recipe defaults from mtailanian/uflow configs/mvtec_default.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from uadflows.methods.norm_modes import check_norm

NFA_TAILS = ("chernoff", "exact", "chernoff_unclamped")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def image_size_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


@dataclass
class UFlowConfig:
    """Everything that changes a U-Flow model or its training.

    batch_size, epochs, lr: per-category values of the paper live in the paper config; these
        defaults are the official ``configs/mvtec_default.yaml`` (8, 200, 1e-4).
    image_size: input side in pixels, or (H, W) (448 for MS-CaiT, the paper's set-up).
    n_scales: how many of the extractor's outputs feed the flow, taken from the coarse end
        (outputs are ordered fine -> coarse). None = all of them, as the official code
        (MS-CaiT's 2; a CNN's 3 stages, strides 4/8/16: mtailanian/uflow
        src/feature_extraction.py:36-42, out_indices=[1, 2, 3]). 2 on a CNN drops the
        stride-4 stage (faster; not the method).
    layernorm: a trainable ``LayerNorm([C, H, W])`` per scale before the flow. None = as the
        official code: on CNN extractors (src/feature_extraction.py:48-53), not on MS-CaiT,
        whose transformer blocks end in their own norm (src/feature_extraction.py:128-138).
    norm: that LayerNorm's mode (issue 22; methods/layernorm.py says why): "faithful" (the
        official recipe, default), "bounded" (its affine weights counted in the log-det; not
        the paper's) or "no-affine". The last two need a LayerNorm (not on MS-CaiT).
    flow_steps: AllInOneBlock steps per scale (4 in every official config).
    affine_clamp, subnet_hidden_ratio: AllInOneBlock clamp and subnet width (2.0 and 1.0).
    weight_decay, lr_end_factor: Adam weight decay, and LinearLR's final factor (1.0 -> 0.4).
    nfa_tail: tail probability of one pixel's squared latent norm under H0:
        "chernoff" (the paper's bound, clamped at 1), "exact" (chi-square survival function)
        or "chernoff_unclamped" (the official code's formula, for comparison only).
    compute_nfa: add the "log_nfa" map to ``anomaly_maps`` (a CPU tree per image and scale).
    """

    batch_size: int = 8
    epochs: int = 200
    lr: float = 1e-4
    image_size: int | tuple[int, int] = 448
    n_scales: int | None = None
    layernorm: bool | None = None
    norm: str = "faithful"
    flow_steps: int = 4
    affine_clamp: float = 2.0
    subnet_hidden_ratio: float = 1.0
    weight_decay: float = 1e-5
    lr_end_factor: float = 0.4
    nfa_tail: str = "chernoff"
    compute_nfa: bool = True

    def __post_init__(self) -> None:
        for key in ("batch_size", "epochs", "flow_steps"):
            if not _positive_int(getattr(self, key)):
                raise ValueError(f"uflow config: {key} must be a positive integer, got {getattr(self, key)!r}")
        size = self.image_size
        if isinstance(size, list):
            self.image_size = size = tuple(size)
        if not (_positive_int(size) or (isinstance(size, tuple) and len(size) == 2 and all(map(_positive_int, size)))):
            raise ValueError(f"uflow config: image_size must be a positive integer or (H, W), got {size!r}")
        if self.n_scales is not None and (
            isinstance(self.n_scales, bool) or not isinstance(self.n_scales, int) or self.n_scales < 2
        ):
            raise ValueError(f"uflow config: n_scales must be an integer >= 2 or null (all), got {self.n_scales!r}")
        if self.layernorm is not None and not isinstance(self.layernorm, bool):
            raise ValueError(f"uflow config: layernorm must be true, false or null (by backbone), got {self.layernorm!r}")
        check_norm(self.norm, "uflow config")
        if self.norm != "faithful" and self.layernorm is False:
            raise ValueError(f"uflow config: norm {self.norm!r} needs a LayerNorm, but layernorm is false")
        for key in ("lr", "affine_clamp", "subnet_hidden_ratio"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"uflow config: {key} must be a positive number, got {value!r}")
        if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise ValueError(f"uflow config: weight_decay must be >= 0, got {self.weight_decay!r}")
        if not isinstance(self.lr_end_factor, (int, float)) or not 0 < self.lr_end_factor <= 1:
            raise ValueError(f"uflow config: lr_end_factor must be in (0, 1], got {self.lr_end_factor!r}")
        if self.nfa_tail not in NFA_TAILS:
            raise ValueError(f"uflow config: nfa_tail must be one of {NFA_TAILS}, got {self.nfa_tail!r}")
        if not isinstance(self.compute_nfa, bool):
            raise ValueError(f"uflow config: compute_nfa must be true or false, got {self.compute_nfa!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "UFlowConfig":
        """Build from a mapping (e.g. a YAML section); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KeyError(f"uflow config: unknown parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))


# What the registry reads without importing the model (and torch): uadflows.methods.recipe/label.
LABEL = "U-Flow"
RECIPE = UFlowConfig
