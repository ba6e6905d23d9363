"""Over seeds: mean, sample standard deviation and Student's t interval of the mean.

The t interval assumes the per-seed values are independent draws from a roughly normal
distribution (training randomness only: every seed is scored on the same test images, so
it says nothing about the test set's sampling; the bootstrap does that).
"""

from __future__ import annotations

import numpy as np


def seed_summary(values, level: float = 0.95) -> dict[str, float]:
    """{"n", "mean", "std", "t_low", "t_high"}; std and the interval are NaN for one seed."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    nan = float("nan")
    if x.size == 0:
        return {"n": 0, "mean": nan, "std": nan, "t_low": nan, "t_high": nan}
    mean = float(x.mean())
    if x.size < 2:
        return {"n": 1, "mean": mean, "std": nan, "t_low": nan, "t_high": nan}
    from scipy import stats  # imported here: only a t interval needs it

    std = float(x.std(ddof=1))
    low, high = stats.t.interval(level, df=x.size - 1, loc=mean, scale=std / np.sqrt(x.size))
    return {"n": int(x.size), "mean": mean, "std": std, "t_low": float(low), "t_high": float(high)}
