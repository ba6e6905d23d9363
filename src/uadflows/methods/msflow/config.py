"""MSFlow's typed config: the recipe of cool-xuan/msflow (`default.py`, `main.py`)."""

from __future__ import annotations

from dataclasses import dataclass

from uadflows.methods.keywords import from_keywords


@dataclass
class MSFlowConfig:
    """Hyper-parameters of MSFlow; the defaults are the paper's MVTec AD set-up.

    batch_size: training batch (the original CLI default).
    epochs: plain epochs = meta-epochs x sub-epochs of the original (25 x 4).
    lr: Adam learning rate.
    image_size: input side in pixels (transistor uses 256: set per category by the
        paper config, not here). Replaced by the extractor's (H, W) once a model is built.
    clamp: soft clamp of every coupling (tanh in the parallel flows, atan in the fusion).
    blocks_per_scale: AllInOneBlocks of the parallel flow of each scale.
    cond_channels: channels of the 2-D sin/cos positional encoding (multiple of 4).
    top_k: fraction of pixels whose mean makes the image score.
    amp: autocast (float16) during training on CUDA; the trainer must then use a
        GradScaler as the original does. Scoring always runs in float32.
    warmup_from / warmup_fraction: linear warm-up from lr * warmup_from over this
        fraction of the epochs (3 of 25 meta-epochs = 0.12).
    decay_at / decay_gamma: MultiStepLR milestones as fractions of the epochs
        (sub-epochs 70 and 90 of 100) and their factor.
    grad_clip: max gradient norm.
    """

    batch_size: int = 8
    epochs: int = 100
    lr: float = 1e-4
    image_size: int | tuple[int, int] = 512
    clamp: float = 1.9
    blocks_per_scale: tuple[int, ...] = (2, 5, 8)
    cond_channels: int = 64
    top_k: float = 0.03
    amp: bool = False
    warmup_from: float = 0.1
    warmup_fraction: float = 0.12
    decay_at: tuple[float, ...] = (0.70, 0.90)
    decay_gamma: float = 0.33
    grad_clip: float = 2.0

    def __post_init__(self) -> None:
        self.blocks_per_scale = tuple(self.blocks_per_scale)
        self.decay_at = tuple(self.decay_at)
        problems = []
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.lr <= 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.clamp <= 0:
            problems.append(f"clamp must be > 0, got {self.clamp}")
        if not self.blocks_per_scale or min(self.blocks_per_scale) < 1:
            problems.append(f"blocks_per_scale needs >= 1 block per scale, got {self.blocks_per_scale}")
        if self.cond_channels < 4 or self.cond_channels % 4:
            problems.append(f"cond_channels must be a positive multiple of 4, got {self.cond_channels}")
        if not 0 < self.top_k <= 1:
            problems.append(f"top_k must be in (0, 1], got {self.top_k}")
        if not 0 < self.warmup_from <= 1:
            problems.append(f"warmup_from must be in (0, 1], got {self.warmup_from}")
        if not 0 <= self.warmup_fraction < 1:
            problems.append(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if any(not 0 < f <= 1 for f in self.decay_at):
            problems.append(f"decay_at fractions must be in (0, 1], got {self.decay_at}")
        if self.grad_clip <= 0:
            problems.append(f"grad_clip must be > 0, got {self.grad_clip}")
        if problems:
            raise ValueError("MSFlowConfig: " + "; ".join(problems))

    @classmethod
    def from_kwargs(cls, **kwargs) -> "MSFlowConfig":
        """Build from keyword parameters, naming any key MSFlow does not know."""
        return from_keywords(cls, "msflow", kwargs)


# What the registry reads without importing the model (and torch): uadflows.methods.recipe/label.
LABEL = "MSFlow"
RECIPE = MSFlowConfig
