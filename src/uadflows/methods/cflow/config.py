"""CFlow-AD's typed recipe (torch-free): the defaults of gudovskiy/cflow-ad for MVTec AD.

Sources (file:line at the official repository's HEAD): config.py:15-36 (encoder, pool
layers, coupling blocks, input size, batch size, lr, meta/sub-epochs), main.py:43-73
(clamp, condition width, cosine schedule with warm-up), train.py:287 (fiber batch N).
"""

from __future__ import annotations

from dataclasses import dataclass

from uadflows.methods.keywords import from_keywords


@dataclass
class CFlowConfig:
    """Hyper-parameters of CFlow-AD; the defaults are the paper's MVTec AD set-up.

    batch_size: images per batch (config.py:29, 32).
    epochs: plain epochs = meta-epochs x sub-epochs of the original (25 x 8 = 200); one
        sub-epoch is one pass over the training images (train.py:28-39).
    lr: Adam learning rate (config.py:31, 2e-4).
    image_size: input side (config.py:25, 256).
    coupling_blocks: AllInOneBlocks per decoder (config.py:21, 8).
    cond_channels: width of the 2-D positional encoding the decoders are conditioned on
        (main.py:44, 128).
    clamp: soft clamp of every coupling (main.py:43, 1.9).
    fiber_batch: positions per optimiser step, drawn at random from a batch's feature
        maps (train.py:287, N = 256).
    meta_epochs: how many cosine steps the schedule has over the run (config.py:33, 25).
    warmup_meta_epochs: linear warm-up length in meta-epochs (main.py:65, 2).
    warmup_from: warm-up start as a fraction of lr (main.py:69, lr / 10).
    decay_rate: the cosine ends at lr * decay_rate^3 (main.py:64,71; 0.1).
    """

    batch_size: int = 32
    epochs: int = 200
    lr: float = 2e-4
    image_size: int | tuple[int, int] = 256
    coupling_blocks: int = 8
    cond_channels: int = 128
    clamp: float = 1.9
    fiber_batch: int = 256
    meta_epochs: int = 25
    warmup_meta_epochs: int = 2
    warmup_from: float = 0.1
    decay_rate: float = 0.1

    def __post_init__(self) -> None:
        problems = []
        for key in ("batch_size", "epochs", "coupling_blocks", "fiber_batch", "meta_epochs"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{key} must be an integer >= 1, got {value!r}")
        if not isinstance(self.warmup_meta_epochs, int) or not 0 <= self.warmup_meta_epochs < self.meta_epochs:
            problems.append(f"warmup_meta_epochs must be an integer in [0, meta_epochs), got {self.warmup_meta_epochs!r}")
        if not isinstance(self.cond_channels, int) or self.cond_channels < 4 or self.cond_channels % 4:
            problems.append(f"cond_channels must be a positive multiple of 4, got {self.cond_channels!r}")
        for key in ("lr", "clamp"):
            if getattr(self, key) <= 0:
                problems.append(f"{key} must be > 0, got {getattr(self, key)!r}")
        for key in ("warmup_from", "decay_rate"):
            if not 0 < getattr(self, key) <= 1:
                problems.append(f"{key} must be in (0, 1], got {getattr(self, key)!r}")
        if problems:
            raise ValueError("cflow config: " + "; ".join(problems))

    @classmethod
    def from_kwargs(cls, **kwargs) -> "CFlowConfig":
        """Build from keyword parameters, naming any key CFlow does not know."""
        return from_keywords(cls, "cflow", kwargs)


# What the registry reads without importing the model (and torch): uadflows.methods.recipe/label.
LABEL = "CFlow"
RECIPE = CFlowConfig
