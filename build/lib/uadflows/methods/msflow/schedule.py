"""MSFlow's schedule (`train.py`) mapped from meta/sub-epochs onto plain epochs.

The original steps a LinearLR warm-up (0.1x -> 1x over 3 meta-epochs = 12 sub-epochs) and
a MultiStepLR (sub-epochs 70 and 90, gamma 0.33) once per sub-epoch; 25 x 4 = 100
sub-epochs. One of our epochs is one sub-epoch, and for a run of E epochs the warm-up
length and milestones are scaled by E / 100 (rounded), so E = 100 is the paper exactly.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import ChainedScheduler, LinearLR, LRScheduler, MultiStepLR

from uadflows.methods.msflow.config import MSFlowConfig


def schedule_epochs(epochs: int, config: MSFlowConfig) -> tuple[int, list[int]]:
    """(warm-up epochs, decay milestones) for a run of `epochs` epochs."""
    if epochs < 1:
        raise ValueError(f"msflow schedule: epochs must be >= 1, got {epochs}")
    warmup = round(config.warmup_fraction * epochs)
    milestones = [max(1, round(f * epochs)) for f in config.decay_at]
    return warmup, milestones


def build_scheduler(optimizer: torch.optim.Optimizer, epochs: int, config: MSFlowConfig) -> LRScheduler:
    """Warm-up and step decay chained, to be stepped once per epoch."""
    warmup, milestones = schedule_epochs(epochs, config)
    decay = MultiStepLR(optimizer, milestones=milestones, gamma=config.decay_gamma)
    if warmup == 0:  # short runs: round(0.12 * epochs) == 0 means no warm-up at all
        return decay
    ramp = LinearLR(optimizer, start_factor=config.warmup_from, end_factor=1.0, total_iters=warmup)
    return ChainedScheduler([ramp, decay])
