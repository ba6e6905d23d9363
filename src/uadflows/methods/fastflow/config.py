"""FastFlow's typed recipe (Yu et al. 2021, arXiv 2111.07677; widths and kernels as the
reference reproduction gathierry/FastFlow, configs/*.yaml). Torch-free."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from uadflows.methods.norm_modes import check_norm

VARIANTS = ("paper", "reproduction")
# Transformer subnet width in the "paper" variant: 768 / 6, which gives the paper's
# 14.8M extra parameters for CaiT and DeiT (the reproduction's int(384 * 0.16) = 61 gives 7.1M).
PAPER_VIT_HIDDEN = 128


@dataclass
class FastFlowConfig:
    """FastFlow's recipe. ``hidden_ratio`` scales the subnet's input channels (the half a
    coupling sees, C - C // 2) as in gathierry/FastFlow; ``hidden_channels`` fixes the
    width instead. Kernels alternate 3x3 / 1x1 unless ``conv3x3_only``."""

    flow_steps: int = 8
    hidden_ratio: float = 1.0
    hidden_channels: int | None = None
    conv3x3_only: bool = False
    layernorm: bool = True
    # Issue 22: "faithful" (the paper's, default), "bounded" (the LayerNorm's affine counted
    # in the log-det) or "no-affine"; methods/layernorm.py says why.
    norm: str = "faithful"
    clamp: float = 2.0
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 32
    epochs: int = 500
    variant: str = "paper"
    # Issue 9: LeanAllInOneBlock (index permutation; cheaper arithmetic when scoring; same
    # weights, same outputs to float precision, faster: docs/benchmarks.md); False gives
    # FrEIA's AllInOneBlock, the reference, tested equal.
    lean_permutation: bool = True

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"fastflow: variant {self.variant!r} is not one of {', '.join(VARIANTS)}")
        for key in ("flow_steps", "batch_size", "epochs"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"fastflow: {key} must be a positive int, got {value!r}")
        for key in ("hidden_ratio", "clamp", "lr"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"fastflow: {key} must be a positive number, got {value!r}")
        if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise ValueError(f"fastflow: weight_decay must be >= 0, got {self.weight_decay!r}")
        check_norm(self.norm, "fastflow")
        if self.norm != "faithful" and not self.layernorm:
            raise ValueError(f"fastflow: norm {self.norm!r} needs layernorm: true (this recipe has no trainable LayerNorm)")
        if self.hidden_channels is not None and (not isinstance(self.hidden_channels, int) or self.hidden_channels < 1):
            raise ValueError(f"fastflow: hidden_channels must be a positive int or None, got {self.hidden_channels!r}")

    def hidden_width(self, subnet_in: int) -> int:
        return self.hidden_channels if self.hidden_channels is not None else int(subnet_in * self.hidden_ratio)

    def kernel_size(self, step: int) -> int:
        return 3 if self.conv3x3_only or step % 2 == 0 else 1

    @classmethod
    def for_backbone(cls, backbone: str, variant: str = "paper", **overrides: Any) -> "FastFlowConfig":
        """The recipe for a backbone set-up name, then ``overrides`` (config field names)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"fastflow: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        config = cls(variant=variant, **_recipe(backbone, variant))
        return replace(config, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _backbone_kind(backbone: str) -> str:
    from uadflows.backbones.setups import kind_of

    try:
        return kind_of(backbone)
    except KeyError:  # a custom extractor: treat as a CNN
        return "cnn"


def _recipe(backbone: str, variant: str) -> dict[str, Any]:
    arch = backbone.split(".")[0]
    if _backbone_kind(backbone) in ("vit", "multi"):
        # Transformers: 20 steps, hidden ratio 0.16, alternating kernels, the backbone's own
        # (pretrained, frozen) norm instead of a trainable LayerNorm.
        hidden = PAPER_VIT_HIDDEN if variant == "paper" else None
        return dict(flow_steps=20, hidden_ratio=0.16, hidden_channels=hidden, layernorm=False)
    # ResNet18 uses 3x3 kernels only (gathierry/FastFlow configs); the demo's
    # EfficientNet-Lite0 (24/40/112 channels, even smaller) follows ResNet18.
    small = arch in ("resnet18", "tf_efficientnet_lite0")
    return dict(flow_steps=8, hidden_ratio=1.0, conv3x3_only=small, layernorm=True)


# What the registry reads without importing the model (and torch): uadflows.methods.recipe/label.
LABEL = "FastFlow"
RECIPE = FastFlowConfig
