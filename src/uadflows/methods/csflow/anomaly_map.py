"""CS-Flow's image score (the official one) and a pixel map (ours, not the paper's)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def csflow_anomaly_maps(z: Sequence[torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """``score``: the paper's image score, the mean of z^2 / 2 over every latent dimension
    of all scales (cs-flow train.py:67-68, evaluate.py:168-169): larger maps weigh more.

    ``map``: OURS, not the paper's (CS-Flow is image-level; its evaluate.py:173-179 only
    draws scale 0's channel mean of z^2). Per scale and position the channel mean of
    z^2 / 2, upsampled bilinearly (``align_corners=False``, as that drawing) to ``size``,
    then averaged over scales, so the shared evaluator can score localisation. Its mean over
    positions of one scale is that scale's share of ``score``.
    """
    size = (int(size[0]), int(size[1]))
    flat = torch.cat([zs.float().flatten(1) for zs in z], dim=1)
    score = 0.5 * flat.pow(2).mean(1)
    per_scale = [
        F.interpolate(0.5 * zs.float().pow(2).mean(1, keepdim=True), size=size, mode="bilinear", align_corners=False)
        for zs in z
    ]
    return {"map": torch.stack(per_scale, 0).mean(0)[:, 0], "score": score}
