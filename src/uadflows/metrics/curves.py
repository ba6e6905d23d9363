"""Curve helpers shared by the image and pixel metrics and the PRO code.

``binary_rates`` and ``roc_corners`` are the exact AUROC / AP / F1-max and ROC curve of any
number of scores (images or pixels) from the ascending normal scores and the anomalous
ones; tests/test_metrics.py checks them against scikit-learn. See pixel.py for why they
are exact.
"""

from __future__ import annotations

import numpy as np


def distinct(scores: np.ndarray, weights: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Distinct score values ascending, how many pixels have each, and (if weights are
    given) the sum of their weights. Tied scores are one threshold, as in sklearn and in
    the official AU-PRO."""
    if scores.size == 0:
        return scores, np.zeros(0, np.int64), None if weights is None else np.zeros(0)
    if weights is None:
        values, counts = np.unique(scores, return_counts=True)
        return values, counts.astype(np.int64), None
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    counts = np.diff(np.append(starts, ordered.size)).astype(np.int64)
    return ordered[starts], counts, np.add.reduceat(weights[order], starts)


def binary_rates(sorted_negatives: np.ndarray, positives: np.ndarray) -> tuple[float, float, float]:
    """Exact (AUROC, AP, F1-max) from the ascending normal scores and the anomalous ones."""
    n_normal, n_anomalous = sorted_negatives.size, positives.size
    values, counts, _ = distinct(positives)  # ascending
    normal_below = np.searchsorted(sorted_negatives, values, side="left")
    normal_tied = np.searchsorted(sorted_negatives, values, side="right") - normal_below
    # twice the Mann-Whitney count, in integers so that nothing is rounded before the end
    twice_pairs = int(np.sum(counts * (2 * normal_below + normal_tied), dtype=np.int64))
    auroc = twice_pairs / (2.0 * n_anomalous * n_normal)

    # thresholds from the highest distinct anomalous score down
    true_pos = np.cumsum(counts[::-1])
    false_pos = (n_normal - normal_below)[::-1]
    precision = true_pos / (true_pos + false_pos)
    ap = float(np.sum(counts[::-1] / n_anomalous * precision))
    f1_max = float(np.max(2.0 * true_pos / (true_pos + false_pos + n_anomalous)))
    return float(auroc), ap, f1_max


def roc_corners(sorted_negatives: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every corner of the exact ROC curve, (0, 0) to (1, 1): both ends of each step at a
    distinct anomalous score (``np.trapezoid(tpr, fpr)`` is the AUROC)."""
    n_normal = sorted_negatives.size
    values, counts, _ = distinct(positives)
    normal_at_least = (n_normal - np.searchsorted(sorted_negatives, values, side="left"))[::-1]
    normal_above = (n_normal - np.searchsorted(sorted_negatives, values, side="right"))[::-1]
    positives_at_least = np.cumsum(counts[::-1])
    positives_above = positives_at_least - counts[::-1]
    fpr = np.concatenate(([0.0], interleave(normal_above, normal_at_least) / n_normal, [1.0]))
    tpr = interleave(positives_above, positives_at_least) / positives.size
    return fpr, np.concatenate(([0.0], tpr, [1.0]))


def interleave(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """[b0, a0, b1, a1, ...]: the two ends of each tied-threshold step of a curve."""
    out = np.empty(before.size * 2, dtype=np.float64)
    out[0::2] = before
    out[1::2] = after
    return out


def trapezoid_to_limit(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Area under y(x) for x in [x[0], limit] by the trapezoid rule; x non-decreasing.

    As the official MVTec AD code: every point with x <= limit is used; if limit is not one
    of the x values, y is interpolated linearly at limit between the last point below and
    the first point above it, and that last partial trapezoid is added.
    """
    inside = int(np.searchsorted(x, limit, side="right"))  # points with x <= limit
    if inside == 0:
        raise ValueError("curve starts beyond the integration limit")
    xs, ys = x[:inside], y[:inside]
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) * 0.5))
    if xs[-1] != limit:
        if inside == x.size:
            raise ValueError(f"curve ends at x={x[-1]} before the integration limit {limit}")
        y_limit = ys[-1] + (y[inside] - ys[-1]) * (limit - xs[-1]) / (x[inside] - xs[-1])
        area += 0.5 * (ys[-1] + y_limit) * (limit - xs[-1])
    return float(area)


def cut_at_limit(x: np.ndarray, y: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """The points with x <= limit, ending exactly at x = limit (interpolated as in
    ``trapezoid_to_limit``), so that ``np.trapezoid(y, x)`` is the same area."""
    inside = int(np.searchsorted(x, limit, side="right"))
    xs, ys = x[:inside], y[:inside]
    if xs[-1] == limit or inside == x.size:
        return xs, ys
    y_limit = ys[-1] + (y[inside] - ys[-1]) * (limit - xs[-1]) / (x[inside] - xs[-1])
    return np.append(xs, limit), np.append(ys, y_limit)


def thin_curve(x: np.ndarray, y: np.ndarray, max_points: int | None) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points of a curve for plotting, spread evenly along its
    length (both axes scaled to [0, 1]); the first and last points are always kept."""
    if max_points is None or x.size <= max_points:
        return x, y
    if max_points < 2:
        raise ValueError(f"max_points: {max_points}, expected at least 2 (or None for every point)")
    span_x = float(x[-1] - x[0]) or 1.0
    span_y = float(np.ptp(y)) or 1.0
    steps = np.hypot(np.diff(x) / span_x, np.diff(y) / span_y)
    length = np.concatenate(([0.0], np.cumsum(steps)))
    marks = np.linspace(0.0, length[-1], max_points)
    keep = np.unique(np.concatenate(([0, x.size - 1], np.searchsorted(length, marks[1:-1]))))
    return x[keep], y[keep]
