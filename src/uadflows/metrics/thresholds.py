"""Thresholds chosen on normal validation images, and the metrics of the test set at them.

Unlike F1-max (the best F1 over every threshold, chosen on the test set's own labels: an
oracle), these thresholds see no test image: each is a rule applied to the scores of the
normal validation images (docs/statistics.md). At a threshold t an image (or pixel) is
predicted anomalous when its score is >= t.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from uadflows.metrics.inputs import MetricsError, check_map
from uadflows.metrics.segmentation import mean_plus_std_threshold

RULES = ("quantile", "mean_std")
SUFFIX = "_at_val_threshold"  # every metric at a validation threshold is named so
THRESHOLDED = tuple(f"{m}{SUFFIX}" for m in (
    "image_f1", "image_precision", "image_recall", "pixel_f1", "pixel_precision", "pixel_recall",
    "seg_iou"))


def _rule(rule: Any) -> tuple[str, float]:
    """(name, parameter) of a rule given as an object with ``rule``, ``q``, ``k`` or a dict."""
    get = rule.get if isinstance(rule, dict) else lambda k, d=None: getattr(rule, k, d)
    name = get("rule")
    if name not in RULES:
        raise MetricsError(f"threshold rule: {name!r}, expected one of {RULES}")
    return name, float(get("q", 0.99) if name == "quantile" else get("k", 3.0))


def image_threshold(scores: Any, rule: Any) -> float:
    """The threshold of image scores from normal validation scores: their q-quantile
    (numpy's linear interpolation) or mean + k * std (population std)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0 or not np.isfinite(s).all():
        raise MetricsError("validation scores: empty or not finite; the threshold needs normal images")
    name, p = _rule(rule)
    return float(np.quantile(s, p)) if name == "quantile" else float(s.mean() + p * s.std())


def pixel_threshold(maps: Iterable[np.ndarray], rule: Any) -> float:
    """The threshold of pixel scores from the normal validation maps (streamed), every pixel
    of every map pooled: their q-quantile, or mean + k * std (MVTec AD 2's rule at k = 3)."""
    name, p = _rule(rule)
    if name == "mean_std":
        return mean_plus_std_threshold(maps, k=p)
    values = [check_map(m, i, "validation maps").astype(np.float32, copy=False).ravel()
              for i, m in enumerate(maps)]
    if not values:
        raise MetricsError("validation maps: none given, the threshold needs normal images")
    return float(np.quantile(np.concatenate(values), p))


def binary_metrics(tp: Any, fp: Any, fn: Any) -> dict[str, Any]:
    """precision, recall and f1 from counts; each 0 where its denominator is 0 (nothing
    predicted: precision 0, as scikit-learn's zero_division=0). Counts given as arrays (the
    bootstrap's resamples) give arrays; scalars give floats."""
    tp, fp, fn = (np.asarray(c, dtype=np.float64) for c in (tp, fp, fn))

    def ratio(a, b):
        r = np.divide(a, b, out=np.zeros_like(a), where=b > 0)
        return float(r) if r.ndim == 0 else r
    return {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
            "f1": ratio(2 * tp, 2 * tp + fp + fn)}


class PixelCounter:
    """Per-image counts of true positives, false positives and false negatives of the
    segmentation ``map >= threshold``, one (map, bool mask) pair at a time (an evaluator's
    ``on_pair``), and each image's IoU (1 when prediction and mask are both empty)."""

    def __init__(self, n_images: int, threshold: float):
        self.threshold = float(threshold)
        self.tp, self.fp, self.fn = (np.zeros(n_images, np.int64) for _ in range(3))

    def __call__(self, index: int, score_map: np.ndarray, mask: np.ndarray) -> None:
        pred = np.asarray(score_map) >= self.threshold
        gt = np.asarray(mask, dtype=bool)
        self.tp[index] = np.count_nonzero(pred & gt)
        self.fp[index] = np.count_nonzero(pred & ~gt)
        self.fn[index] = np.count_nonzero(~pred & gt)

    def iou(self) -> np.ndarray:
        union = self.tp + self.fp + self.fn
        return np.where(union == 0, 1.0, self.tp / np.maximum(union, 1))

    def metrics(self) -> dict[str, float]:
        """pixel_{precision,recall,f1} pooled over every pixel, and seg_iou: the mean of the
        per-image IoUs (as ``miou``)."""
        out = {f"pixel_{k}": v for k, v in binary_metrics(self.tp.sum(), self.fp.sum(), self.fn.sum()).items()}
        out["seg_iou"] = float(self.iou().mean())
        return out


def image_metrics_at(labels: Any, scores: Any, threshold: float) -> dict[str, float]:
    """image_{precision,recall,f1} of ``score >= threshold`` against the labels."""
    y = np.asarray(labels).astype(bool)
    pred = np.asarray(scores, dtype=np.float64) >= threshold
    counts = np.count_nonzero(pred & y), np.count_nonzero(pred & ~y), np.count_nonzero(~pred & y)
    return {f"image_{k}": v for k, v in binary_metrics(*counts).items()}
