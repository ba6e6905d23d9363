"""Every metric of the evaluator from weighted counts at ascending score levels, for many
resamples at once.

A bootstrap resample of test images is a vector of counts (how often each image was
drawn). Summing the images' per-level counts with those weights gives, per resample, the
normal and anomalous counts at each score level: (B, V) arrays. The curves then need only
cumulative sums along the levels, never a sort: the scores are sorted (or binned) once.

With every weight 1 and one level per distinct score these are the exact numbers of
``uadflows.metrics`` (tests/test_bootstrap.py checks it against scikit-learn):
- AUROC: Mann-Whitney, ties count one half (sklearn's trapezoid area);
- AP: sklearn's step sum, precision at each level times the recall gained there;
- F1-max: max of 2 TP / (TP + FP + P) over the thresholds (levels);
- AU-PRO: the official MVTec AD curve (FPR, mean region overlap) from (0, 0), trapezoid
  rule up to the limit with linear interpolation at the limit, divided by the limit.
"""

from __future__ import annotations

import numpy as np


def binary_metrics(negatives: np.ndarray, positives: np.ndarray) -> dict[str, np.ndarray]:
    """AUROC, AP, F1-max per row of (B, V) normal / anomalous counts at ascending levels.

    Rows without a normal or without an anomalous count give NaN.
    """
    neg = np.asarray(negatives, dtype=np.float64)
    pos = np.asarray(positives, dtype=np.float64)
    n_neg, n_pos = neg.sum(axis=1), pos.sum(axis=1)
    below = np.cumsum(neg, axis=1) - neg  # normals strictly below each level
    with np.errstate(divide="ignore", invalid="ignore"):
        auroc = np.sum(pos * (below + 0.5 * neg), axis=1) / (n_neg * n_pos)
        # thresholds from the highest level down
        true_pos = np.cumsum(pos[:, ::-1], axis=1)
        false_pos = np.cumsum(neg[:, ::-1], axis=1)
        flagged = true_pos + false_pos
        precision = np.where(flagged > 0, true_pos / np.where(flagged > 0, flagged, 1), 0.0)
        ap = np.sum(pos[:, ::-1] * precision, axis=1) / n_pos
        f1_max = np.max(2.0 * true_pos / (flagged + n_pos[:, None]), axis=1)
    bad = (n_neg == 0) | (n_pos == 0)
    for values in (auroc, ap, f1_max):
        values[bad] = np.nan
    return {"auroc": auroc, "ap": np.minimum(ap, 1.0), "f1_max": f1_max}


def au_pro(negatives: np.ndarray, region_mass: np.ndarray, n_regions: np.ndarray,
           limit: float) -> np.ndarray:
    """AU-PRO per row: (B, V) normal counts and region mass (sum over regions of the share
    of the region's pixels at each level) at ascending levels, (B,) region counts."""
    neg = np.asarray(negatives, dtype=np.float64)
    mass = np.asarray(region_mass, dtype=np.float64)
    n_neg = neg.sum(axis=1, keepdims=True)
    regions = np.asarray(n_regions, dtype=np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        fpr = np.cumsum(neg[:, ::-1], axis=1) / n_neg
        pro = np.clip(np.cumsum(mass[:, ::-1], axis=1) / regions, 0.0, 1.0)
    zeros = np.zeros((neg.shape[0], 1))
    x = np.concatenate((zeros, fpr), axis=1)
    y = np.concatenate((zeros, pro), axis=1)
    inside = x <= limit  # a prefix of each row: x is non-decreasing
    full = inside[:, 1:]
    area = np.sum(np.where(full, (x[:, 1:] - x[:, :-1]) * (y[:, 1:] + y[:, :-1]) * 0.5, 0.0), axis=1)
    last = inside.sum(axis=1) - 1  # last point with x <= limit
    nxt = np.minimum(last + 1, x.shape[1] - 1)
    rows = np.arange(x.shape[0])
    x0, y0, x1, y1 = x[rows, last], y[rows, last], x[rows, nxt], y[rows, nxt]
    partial = (x0 < limit) & (x1 > limit)
    with np.errstate(divide="ignore", invalid="ignore"):
        y_limit = y0 + (y1 - y0) * (limit - x0) / np.where(partial, x1 - x0, 1.0)
    area += np.where(partial, 0.5 * (y0 + y_limit) * (limit - x0), 0.0)
    out = area / limit
    out[(n_neg[:, 0] == 0) | (regions[:, 0] == 0)] = np.nan
    return out
