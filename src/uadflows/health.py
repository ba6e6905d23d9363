"""Training health: per-epoch statistics of the flow on its training batches, and a verdict.

Per epoch and feature scale i (columns of history.csv, MLflow stepped metrics):
``z2_scale{i}``      mean z^2 per latent dimension (about 1 for a fitted Gaussian latent);
``logdet_scale{i}``  mean log|det J| per latent dimension (the flow's, plus the
                     LayerNorm's sum log|w| under ``norm: bounded``);
``ln_scale{i}``      mean affine weight of the pre-flow LayerNorm (1.0 at initialisation),
                     for methods that have one (``model.norm_scales()``).

The verdict (``verdict``; written to the training summary and metrics.json), rules. A
series "still falls steadily" when its least-squares slope over the last ``WINDOW`` of the
epochs (at least ``MIN_WINDOW``) is at least ``STEADY`` times its slope over the window
before: a converging loss decelerates, an unbounded one keeps its pace (the run's first
epochs, where every loss falls fast, are left out of the comparison).
``collapsing``  the lowest scale's LayerNorm weight mean has lost at least half (below
                ``LN_MIN``) and both it and the loss still fall steadily: the
                unbounded-objective failure of issue 22 (methods/layernorm.py), in progress.
``shrunk``      a LayerNorm weight mean below ``LN_MIN``, but it or the loss has levelled off.
``ok``          neither (also every run without a pre-flow LayerNorm).
The loss fall is reported in % per epoch of the run's total decrease (first to last epoch).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

LN_MIN = 0.5  # mean LayerNorm weight (starts at 1.0) below which the norm has "shrunk"
STEADY = 0.5  # recent slope / previous slope at or above which a series "still falls"
WINDOW = 0.2  # the last fraction of the epochs the recent slope is fitted on
MIN_WINDOW = 3


class EpochHealth:
    """Sums over one epoch's training batches; ``row()`` gives the history columns."""

    def __init__(self) -> None:
        self.z2: list[float] = []
        self.logdet: list[float] = []
        self.n = 0

    @torch.no_grad()
    def add(self, out) -> None:
        """``out``: the FlowOutput of one training batch (log-dets where it has them)."""
        if not self.z2:
            self.z2, self.logdet = [0.0] * len(out.z), [0.0] * len(out.log_jac or [])
        for i, z in enumerate(out.z):
            self.z2[i] += float(z.detach().float().pow(2).sum()) / z[0].numel()
        for i, (z, lj) in enumerate(zip(out.z, out.log_jac or [])):
            self.logdet[i] += float(lj.detach().float().sum()) / z[0].numel()
        self.n += out.z[0].shape[0]

    def row(self, model: Any) -> dict[str, float]:
        row: dict[str, float] = {}
        for i, z2 in enumerate(self.z2):
            row[f"z2_scale{i}"] = z2 / max(self.n, 1)
        for i, ld in enumerate(self.logdet):
            row[f"logdet_scale{i}"] = ld / max(self.n, 1)
        scales = getattr(model, "norm_scales", lambda: None)()
        for i, s in enumerate(scales or []):
            row[f"ln_scale{i}"] = s
        return row


def ln_scales(row: dict[str, Any]) -> dict[int, float]:
    """{scale index: LayerNorm weight mean} of one history row."""
    return {int(k[len("ln_scale"):]): float(v) for k, v in row.items()
            if k.startswith("ln_scale") and v not in (None, "") and math.isfinite(float(v))}


def loss_trend(losses: list[float]) -> tuple[float | None, float | None]:
    """Of a series (the loss, a LayerNorm weight): (slope over the last window / slope over
    the window before, recent fall in % per epoch of the total decrease); (None, None) with
    fewer than two windows of epochs, (0, 0) where it did not decrease."""
    n = len(losses)
    k = max(MIN_WINDOW, int(round(WINDOW * n)))
    if n < 2 * k:
        return None, None
    values = np.asarray(losses, float)
    recent, previous = (np.polyfit(np.arange(k, dtype=float), values[i:i + k], 1)[0] for i in (n - k, n - 2 * k))
    total = values[0] - values[-1]
    tol = 1e-9 * max(1.0, float(np.abs(values).max()))  # a flat series' slope is round-off
    if not (total > tol and recent < -tol and previous < -tol):
        return 0.0, 0.0
    return float(recent / previous), float(-recent / total * 100)


def verdict(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The health verdict of a finished training history (rules in the module docstring)."""
    if not history:
        return {"health": "ok", "message": "no epochs"}
    scales = ln_scales(history[-1])
    trend, fall = loss_trend([float(h["loss"]) for h in history])
    out: dict[str, Any] = {"health": "ok", "message": "ok", "loss_trend": trend,
                           "loss_fall_pct_per_epoch": fall,
                           "ln_scale_min": min(scales.values()) if scales else None}
    if not scales or min(scales.values()) >= LN_MIN:
        return out
    worst = min(scales, key=scales.get)
    ln_trend, _ = loss_trend([ln_scales(h).get(worst, math.nan) for h in history])
    out["ln_trend"] = ln_trend
    what = f"LayerNorm scale {scales[worst]:.3g} (scale {worst})"
    if trend is not None and trend >= STEADY and ln_trend is not None and ln_trend >= STEADY:
        out.update(health="collapsing", message=f"collapsing: {what} still shrinking, loss still "
                   f"falling {fall:.2g} %/epoch of its total decrease")
    else:
        levelled = "loss" if trend is None or trend < STEADY else "LayerNorm"
        out.update(health="shrunk", message=f"shrunk: {what}, {levelled} levelled off")
    return out


__all__ = ["EpochHealth", "LN_MIN", "STEADY", "WINDOW", "ln_scales", "loss_trend", "verdict"]
