"""CFlow-AD's learning rate, mapped from meta-epochs onto plain epochs.

The original (custom_models/utils.py:48-73, main.py:62-73) sets, at every image batch of
meta-epoch m (of M = 25, each 8 sub-epochs long): a cosine value
lr_m = eta_min + (lr - eta_min) * (1 + cos(pi m / M)) / 2 with eta_min = lr * 0.1^3, and
during the first 2 meta-epochs overrides it with a linear warm-up from lr / 10 to the
cosine value at m = 2, progressing per batch. Here one epoch is one sub-epoch; a run of E
epochs is cut into M meta-epochs of E / M epochs (by fraction of the run), so E = 200 is
the original exactly, and the factor is recomputed for every image batch.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from uadflows.methods.cflow.config import CFlowConfig


def lr_factor(step: int, total_steps: int, config: CFlowConfig) -> float:
    """Multiplier of ``config.lr`` for image batch ``step`` (0-based) of ``total_steps``."""
    meta, warm = config.meta_epochs, config.warmup_meta_epochs
    eta_min = config.decay_rate**3

    def cosine(m: int) -> float:
        return eta_min + (1 - eta_min) * (1 + math.cos(math.pi * m / meta)) / 2

    progress = step / total_steps  # fraction of the run done before this batch
    m = min(meta - 1, int(progress * meta))
    if m < warm:
        p = progress * meta / warm
        return config.warmup_from + p * (cosine(warm) - config.warmup_from)
    return cosine(m)


def build_scheduler(optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int,
                    config: CFlowConfig) -> LambdaLR:
    """To be stepped once per image batch (not per fiber step, as the original)."""
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError(f"cflow schedule: epochs and steps_per_epoch must be >= 1, got {epochs}, {steps_per_epoch}")
    total = epochs * steps_per_epoch
    return LambdaLR(optimizer, lambda step: lr_factor(step, total, config))
