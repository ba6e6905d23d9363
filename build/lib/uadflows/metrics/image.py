"""Image-level metrics: a few hundred scores, so scikit-learn computes them directly."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from uadflows.metrics.inputs import check_labels_scores


def image_metrics(labels: Any, scores: Any) -> dict[str, float]:
    """``{"image_auroc", "image_ap", "image_f1_max"}``.

    labels: 0 normal / 1 anomalous (or bool), one per image; scores: higher = more anomalous.
    F1-max is the largest 2PR / (P + R) over the points of sklearn's precision-recall curve
    (points where it is undefined, P = R = 0, are skipped).
    """
    y, s = check_labels_scores(labels, scores)
    precision, recall, _ = precision_recall_curve(y, s)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    # sklearn's AP is a float sum that can land a rounding step above 1 (seen: 1 + 2e-16)
    return {
        "image_auroc": float(roc_auc_score(y, s)),
        "image_ap": min(1.0, float(average_precision_score(y, s))),
        "image_f1_max": float(np.max(f1[np.isfinite(f1)])),
    }


def image_roc_points(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's ROC curve (collinear points dropped), from (0, 0) to (1, 1)."""
    y, s = check_labels_scores(labels, scores)
    fpr, tpr, _ = roc_curve(y, s)
    return fpr, tpr
