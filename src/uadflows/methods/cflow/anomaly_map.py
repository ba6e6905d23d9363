"""CFlow-AD's log-likelihoods, its anomaly map and image score (train.py:76-77, 308-331).

The official map depends on the whole test set: each layer's log-likelihoods are shifted
by their maximum over every test position (train.py:316), exponentiated, upsampled
(bilinear, align_corners=True) to the input size and summed over layers (321-326); the
anomaly map is the set's maximum of that sum minus it (329), the image score the map's
per-image maximum (331). ``cflow_anomaly_maps`` does exactly that over whatever set it is
given: the scorer gives it the whole test set (``CFlow.finalize_maps``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)  # the original's -_GCONST_ (utils.py:6)


def log_prob_per_dim(z: torch.Tensor, log_jac: torch.Tensor) -> torch.Tensor:
    """(E, C) latents and (E,) log-dets -> (E,) log-likelihood per dimension:
    (C * log N(0, 1) constant - |z|^2 / 2 + log-det) / C (utils.py:38-40, train.py:76-77)."""
    channels = z.shape[1]
    return (-channels * LOG_SQRT_2PI - 0.5 * z.pow(2).sum(dim=1) + log_jac) / channels


def cflow_anomaly_maps(log_probs: list[torch.Tensor], size: tuple[int, int],
                       reference: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Per-layer log-likelihood maps (N, h_l, w_l) of a whole set -> {"map": (N, H, W),
    "score": (N,)}, in float64 as the original, then float32. ``reference``: another set's
    per-layer maps (the test set's) whose maxima are used instead of this set's, so that
    maps of the validation images share the test maps' scale (a threshold chosen on one
    applies to the other)."""
    ref = log_probs if reference is None else reference
    maxima = [r.double().max() for r in ref]

    def summed(lps: list[torch.Tensor]) -> torch.Tensor:
        total = None
        for lp, top in zip(lps, maxima):
            prob = torch.exp(lp.double() - top)
            up = F.interpolate(prob[:, None], size=tuple(size), mode="bilinear", align_corners=True)[:, 0]
            total = up if total is None else total + up
        return total

    total = summed(log_probs)
    anomaly = (total if reference is None else summed(reference)).max() - total
    return {"map": anomaly.float(), "score": anomaly.flatten(1).amax(dim=1).float()}
