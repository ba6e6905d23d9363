"""CS-Flow's typed recipe (marco-rudolph/cs-flow config.py, train.py); importable without torch."""

from __future__ import annotations

from dataclasses import dataclass

from uadflows.methods.keywords import from_keywords


@dataclass
class CSFlowConfig:
    """Hyper-parameters of CS-Flow; the defaults are the official MVTec AD set-up.

    batch_size, epochs, lr: config.py:35 (16), config.py:40-41 (4 meta-epochs x 60
        sub-epochs = 240 epochs), config.py:27 (2e-4).
    image_size: side of the largest scale (config.py:13: 768; the others are 384 and 192).
        Replaced by the extractor's (H, W) once a model is built.
    n_blocks: cross-scale coupling blocks (config.py:25: 4).
    kernel_sizes: kernel of every convolution in each block's subnets
        (config.py:36: 3, 3, 3 then 5 in the last block).
    hidden_channels: hidden width of the subnets (config.py:26 fc_internal: 1024).
    clamp: soft clamp of the log-scales, ``clamp * 0.636 * atan(s / clamp)``
        (config.py:23: 3; freia_funcs.py:181-185).
    leaky_slope: LeakyReLU slope inside the subnets (freia_funcs.py:27: 0.1).
    use_gamma: scale each subnet output by a learnt factor initialised to 0, so every block
        starts as the identity (config.py:28, freia_funcs.py:40-42, 105-108).
    adam_eps, weight_decay: Adam's eps and weight decay (train.py:12: 1e-4, 1e-5).
    grad_clip: max gradient norm (config.py:24 max_grad_norm: 1).
    """

    batch_size: int = 16
    epochs: int = 240
    lr: float = 2e-4
    image_size: int | tuple[int, int] = 768
    n_blocks: int = 4
    kernel_sizes: tuple[int, ...] = (3, 3, 3, 5)
    hidden_channels: int = 1024
    clamp: float = 3.0
    leaky_slope: float = 0.1
    use_gamma: bool = True
    adam_eps: float = 1e-4
    weight_decay: float = 1e-5
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        self.kernel_sizes = tuple(self.kernel_sizes)
        if isinstance(self.image_size, list):
            self.image_size = tuple(self.image_size)
        problems = []
        for key in ("batch_size", "epochs", "n_blocks", "hidden_channels"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{key} must be a positive integer, got {value!r}")
        if len(self.kernel_sizes) != self.n_blocks:
            problems.append(f"kernel_sizes needs one kernel per block ({self.n_blocks}), got {list(self.kernel_sizes)}")
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            problems.append(f"kernel_sizes must be odd positive integers (same padding), got {list(self.kernel_sizes)}")
        for key in ("lr", "clamp", "adam_eps", "grad_clip"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                problems.append(f"{key} must be > 0, got {value!r}")
        for key in ("leaky_slope", "weight_decay"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                problems.append(f"{key} must be >= 0, got {value!r}")
        if not isinstance(self.use_gamma, bool):
            problems.append(f"use_gamma must be true or false, got {self.use_gamma!r}")
        if problems:
            raise ValueError("csflow config: " + "; ".join(problems))

    @classmethod
    def from_kwargs(cls, **kwargs) -> "CSFlowConfig":
        """Build from keyword parameters, naming any key CS-Flow does not know."""
        return from_keywords(cls, "csflow", kwargs)


# What the registry reads without importing the model (and torch): uadflows.methods.recipe/label.
LABEL = "CS-Flow"
RECIPE = CSFlowConfig
