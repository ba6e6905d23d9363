"""AU-PRO exactly as the official MVTec AD evaluation defines it, without sorting every pixel.

Definition (docs/metrics.md): 8-connected ground-truth regions; a pixel is positive at
threshold t when its score >= t; FPR(t) = normal pixels >= t / normal pixels; PRO(t) =
mean over regions of the fraction of the region >= t; one curve point per distinct score;
the curve starts at (0, 0); trapezoid rule up to ``limit`` with linear interpolation at
``limit``; divided by ``limit``.

How it is computed fast, and why it is the same number:
- Only the curve up to the first point with FPR >= limit is integrated. That point is the
  threshold t* = the c-th largest normal score, c the smallest count with c / N >= limit.
  ``np.partition`` finds t* in O(N); only the normal scores >= t* (every one tied at t*
  included) are sorted.
- Between two consecutive distinct *anomalous* scores PRO is constant while FPR grows, so
  that part of the curve is a horizontal line: its intermediate points change nothing in
  the trapezoid sum. The curve is therefore rebuilt from its corners only, two per distinct
  anomalous score u > t* (just above u, and at u), counting the normal pixels above each
  corner with ``np.searchsorted``, plus the two corners at t* itself.
- The area uses the official rule (same points with x <= limit, same interpolation).
The test module implements the literal full sort and checks agreement within 1e-6.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from uadflows.metrics.collect import PixelScores, collect_pairs
from uadflows.metrics.curves import cut_at_limit, distinct, interleave, thin_curve, trapezoid_to_limit
from uadflows.metrics.inputs import check_limit

_CHUNK = 1 << 24  # elements per slice when scanning the normal scores (bounds the temporaries)


def au_pro(maps: Any, masks: Any, limit: float = 0.3) -> float:
    """Area under the PRO curve up to FPR = ``limit``, divided by ``limit`` (official MVTec AD).

    maps: float (N, H, W) array or list of (H, W) arrays (sizes may differ per image).
    masks: same shapes, bool or 0/255 (non-zero = anomalous), or None for a good image.
    """
    limit = check_limit(limit)
    scores = collect_pairs(maps, masks, regions=True)
    fpr, pro = pro_corners(scores, limit, negatives_sorted=False)
    return trapezoid_to_limit(fpr, pro, limit) / limit


def pro_curve(maps: Any, masks: Any, limit: float = 0.3, max_points: int | None = 2000
              ) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, pro) of the PRO curve from (0, 0) to FPR = ``limit`` for plotting.

    The last point is at exactly FPR = limit (interpolated as in the AU-PRO), so
    ``np.trapezoid(pro, fpr) / limit`` equals ``au_pro`` when ``max_points=None`` (every
    corner of the curve); otherwise the curve is thinned to at most ``max_points`` points.
    """
    limit = check_limit(limit)
    scores = collect_pairs(maps, masks, regions=True)
    fpr, pro = cut_at_limit(*pro_corners(scores, limit, negatives_sorted=False), limit)
    return thin_curve(fpr, pro, max_points)


def pro_corners(scores: PixelScores, limit: float, negatives_sorted: bool) -> tuple[np.ndarray, np.ndarray]:
    """Corners of the PRO curve from (0, 0) to the first point with FPR >= limit.

    negatives_sorted: ``scores.negatives`` is already sorted ascending (pixel_metrics sorts
    it for AUROC anyway); otherwise it is partially reordered in place here.
    """
    scores.check_both_classes()
    n_normal = scores.negatives.size
    needed = normal_count_reaching(limit, n_normal)
    top = normal_scores_from_cut(scores.negatives, needed, negatives_sorted)
    cut = top[0]  # t*: FPR(t*) >= limit, FPR(t) < limit for every t > t*

    at_or_above = scores.positives >= cut
    values, _, mass = distinct(scores.positives[at_or_above], scores.weights[at_or_above])
    mass_at_cut = 0.0
    if values.size and values[0] == cut:  # anomalous pixels tied with t* join its point
        mass_at_cut = float(mass[0])
        values, mass = values[1:], mass[1:]
    # corners for each distinct anomalous score u > t*, highest first
    normal_at_least = top.size - np.searchsorted(top, values, side="left")[::-1]
    normal_above = top.size - np.searchsorted(top, values, side="right")[::-1]
    mass_at_least = np.cumsum(mass[::-1])
    mass_above = np.concatenate(([0.0], mass_at_least))[:mass_at_least.size]
    mass_above_cut = float(mass_at_least[-1]) if mass_at_least.size else 0.0
    normal_above_cut = top.size - int(np.searchsorted(top, cut, side="right"))

    fpr = np.concatenate(([0.0], interleave(normal_above, normal_at_least), [normal_above_cut, top.size]))
    pro = np.concatenate(([0.0], interleave(mass_above, mass_at_least),
                          [mass_above_cut, mass_above_cut + mass_at_cut]))
    # same float operations as the official code: counts / N and sums / R
    return fpr / n_normal, np.clip(pro / scores.n_regions, 0.0, 1.0)


def normal_count_reaching(limit: float, n_normal: int) -> int:
    """Smallest count c of normal pixels with c / n_normal >= limit (as floats, the way the
    official code compares FPR values with the limit)."""
    c = min(n_normal, max(1, math.ceil(limit * n_normal)))
    while c > 1 and (c - 1) / n_normal >= limit:
        c -= 1
    while c < n_normal and c / n_normal < limit:
        c += 1
    return c


def normal_scores_from_cut(negatives: np.ndarray, count: int, is_sorted: bool) -> np.ndarray:
    """Every normal score >= t* (t* = the ``count``-th largest), sorted ascending: a view
    of ``negatives``, which is reordered in place when not already sorted."""
    cut_index = negatives.size - count
    if is_sorted:
        cut = negatives[cut_index]
        return negatives[np.searchsorted(negatives, cut, side="left"):]
    negatives.partition(cut_index)
    cut = negatives[cut_index]
    below = negatives[:cut_index]
    tied = sum(int(np.count_nonzero(below[i:i + _CHUNK] == cut)) for i in range(0, below.size, _CHUNK))
    # the normal pixels tied at t* count too: they must sit right below the cut. numpy's
    # partition usually leaves them there, but does not promise it.
    if tied and not np.all(below[cut_index - tied:] == cut):
        below.partition(cut_index - tied)
    top = negatives[cut_index - tied:]
    top.sort()
    return top
