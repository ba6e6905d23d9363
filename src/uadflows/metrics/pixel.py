"""Pixel-level AUROC, AP, F1-max and AU-PRO over every pixel of every test image, exactly.

sklearn's curves need the labels, a float64 copy, a sort index and float64 cumulative
counts of every pixel (~40 bytes per pixel: 4 GB for a 10^8-pixel category). Here the
normal scores are kept in their own dtype and sorted in place (4 bytes per pixel for
float32 maps); the anomalous scores (a few percent of the pixels) are reduced to their
distinct values. For every distinct anomalous score u, ``np.searchsorted`` in the sorted
normal scores gives the normal pixels below / at / above u. That is all the curves need:
- AUROC = sum over anomalous pixels of (normals below + half the normals tied) / (P * N),
  the Mann-Whitney form of the area sklearn integrates (ties count one half, as there);
- AP = sum over distinct anomalous scores of (share of recall gained) * precision at that
  threshold: recall only changes there, so this is sklearn's step sum;
- F1-max: for a fixed number of true positives F1 only falls as false positives grow, so
  the maximum over all thresholds is reached at a distinct anomalous score.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from uadflows.metrics.aupro import pro_corners
from uadflows.metrics.collect import PixelScores, collect_pairs
from uadflows.metrics.curves import binary_rates, roc_corners, thin_curve, trapezoid_to_limit
from uadflows.metrics.image import image_roc_points
from uadflows.metrics.inputs import check_limit


def pixel_metrics(maps: Any, masks: Any, pro_limit: float = 0.3) -> dict[str, float]:
    """``{"pixel_auroc", "pixel_ap", "pixel_f1_max", "au_pro"}`` over every pixel.

    maps: float (N, H, W) array or list of (H, W) arrays (sizes may differ per image).
    masks: same shapes, bool or 0/255 (non-zero = anomalous), or None for a good image.
    """
    pro_limit = check_limit(pro_limit, "pro_limit")
    return metrics_from_scores(collect_pairs(maps, masks, regions=True), pro_limit)


def metrics_from_scores(scores: PixelScores, pro_limit: float,
                        extra_pro_limits: tuple[float, ...] = ()) -> dict[str, float]:
    """All pixel metrics from collected scores (sorts ``scores.negatives`` in place).

    extra_pro_limits: more FPR limits, each adding ``au_pro_{limit}`` (MVTec AD 2 reports
    AU-PRO at 0.05 and 0.3) from the same collected scores.
    """
    scores.check_both_classes()
    scores.negatives.sort()
    out = binary_metrics(scores.negatives, scores.positives)
    for i, limit in enumerate((pro_limit, *extra_pro_limits)):
        fpr, pro = pro_corners(scores, limit, negatives_sorted=True)
        out["au_pro" if i == 0 else pro_key(limit)] = trapezoid_to_limit(fpr, pro, limit) / limit
    return out


def pro_key(limit: float) -> str:
    """The metrics key of AU-PRO at an extra FPR limit: ``au_pro_0.05``."""
    return f"au_pro_{check_limit(limit, 'pro limit'):g}"


def binary_metrics(sorted_negatives: np.ndarray, positives: np.ndarray) -> dict[str, float]:
    """Exact AUROC, AP and F1-max from the ascending normal scores and the anomalous ones."""
    auroc, ap, f1_max = binary_rates(sorted_negatives, positives)
    return {"pixel_auroc": auroc, "pixel_ap": ap, "pixel_f1_max": f1_max}


def roc_points(labels_or_masks: Any, scores: Any, max_points: int | None = 2000
               ) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of a ROC curve, from (0, 0) to (1, 1), thinned to at most ``max_points``.

    Image level: ``labels_or_masks`` 1-D labels and ``scores`` 1-D image scores.
    Pixel level: ``labels_or_masks`` masks and ``scores`` maps, as for ``pixel_metrics``
    (the exact curve over every pixel, reduced to its corners before thinning).
    ``max_points=None`` keeps every corner: ``np.trapezoid(tpr, fpr)`` is then the AUROC.
    """
    if _is_one_score_per_image(scores):
        fpr, tpr = image_roc_points(labels_or_masks, scores)
        return thin_curve(fpr, tpr, max_points)
    collected = collect_pairs(scores, labels_or_masks, regions=False)
    collected.check_both_classes()
    collected.negatives.sort()
    return thin_curve(*roc_corners(collected.negatives, collected.positives), max_points)


def _is_one_score_per_image(scores: Any) -> bool:
    if isinstance(scores, np.ndarray) or hasattr(scores, "detach"):
        return len(scores.shape) == 1
    return len(scores) > 0 and np.ndim(scores[0]) == 0
