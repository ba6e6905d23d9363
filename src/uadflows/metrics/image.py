"""Image-level metrics: the same exact counting as the pixel metrics (metrics/curves.py),
one score per image. tests/test_metrics.py checks them against scikit-learn, which the
evaluator does not import (its import alone is 1-3 s of every evaluate job's start-up)."""

from __future__ import annotations

from typing import Any

import numpy as np

from uadflows.metrics.curves import binary_rates, roc_corners
from uadflows.metrics.inputs import check_labels_scores


def image_metrics(labels: Any, scores: Any) -> dict[str, float]:
    """``{"image_auroc", "image_ap", "image_f1_max"}``.

    labels: 0 normal / 1 anomalous (or bool), one per image; scores: higher = more anomalous.
    AUROC: Mann-Whitney, ties count one half (sklearn's trapezoid area); AP: sklearn's step
    sum; F1-max: the largest 2PR / (P + R) over the thresholds.
    """
    auroc, ap, f1_max = binary_rates(*_split(labels, scores))
    # AP is a float sum that can land a rounding step above 1
    return {"image_auroc": auroc, "image_ap": min(1.0, ap), "image_f1_max": f1_max}


def image_roc_points(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """The exact ROC curve's corners, from (0, 0) to (1, 1)."""
    return roc_corners(*_split(labels, scores))


def _split(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """The normal images' scores ascending, and the anomalous images' scores."""
    y, s = check_labels_scores(labels, scores)
    return np.sort(s[~y]), s[y]
