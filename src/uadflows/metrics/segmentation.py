"""Thresholded segmentations against the ground truth: mIoU (e.g. U-Flow's log NFA >= 0),
and MVTec AD 2's SegF1 at a threshold chosen on normal validation images."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from uadflows.metrics.inputs import MetricsError, as_item_list, check_map, check_mask, check_same_length


def mean_iou(predictions: Any, masks: Any) -> float:
    """Mean over all images of |pred & gt| / |pred | gt|; IoU = 1 for an empty prediction
    on an empty mask (a good image correctly left alone).

    predictions: bool (N, H, W) array or list of (H, W) maps (non-zero = predicted anomalous).
    masks: same shapes, bool or 0/255, or None for a good image.
    """
    pred_list = as_item_list(predictions, "predictions")
    mask_list = as_item_list(masks, "masks")
    check_same_length(predictions=pred_list, masks=mask_list)
    ious = []
    for i, p in enumerate(pred_list):
        pred = check_mask(p, i, None, name="predictions")
        ious.append(image_iou(pred, check_mask(mask_list[i], i, pred.shape)))
    return float(np.mean(ious))


def image_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two bool maps of one shape; 1.0 when both are empty."""
    union = np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else np.count_nonzero(pred & gt) / union


def mean_plus_std_threshold(maps: Iterable[np.ndarray], k: float = 3.0) -> float:
    """mean + k * std of every pixel score of normal images (maps streamed one at a time;
    per-image moments merged with Chan et al.'s pairwise update, so nothing cancels).

    MVTec AD 2 binarizes with mean + 3 std of the validation images' scores (its baseline
    rule, as RoBiS, arXiv 2505.21152, restates it)."""
    n, mean, m2 = 0, 0.0, 0.0
    for i, m in enumerate(maps):
        x = check_map(m, i, "validation maps").astype(np.float64, copy=False)
        nb, mb = x.size, float(x.mean())
        m2b = float(((x - mb) ** 2).sum())
        delta = mb - mean
        total = n + nb
        mean += delta * nb / total
        m2 += m2b + delta * delta * n * nb / total
        n = total
    if n == 0:
        raise MetricsError("validation maps: none given, the threshold needs normal images")
    return mean + k * float(np.sqrt(m2 / n))


def segmentation_f1(pairs: Iterable[tuple[np.ndarray, np.ndarray]], threshold: float) -> float:
    """F1 of the binary segmentation ``map >= threshold`` over every pixel of every
    (map, bool mask) pair, each pair at one size (MVTec AD 2's SegF1). 0 when nothing is
    predicted is 0."""
    tp = fp = fn = 0
    for pred_scores, gt in pairs:
        pred = pred_scores >= threshold
        tp += int(np.count_nonzero(pred & gt))
        fp += int(np.count_nonzero(pred & ~gt))
        fn += int(np.count_nonzero(~pred & gt))
    if tp + fn == 0:
        raise MetricsError("masks: no anomalous pixel, SegF1 needs defective test images")
    return 2.0 * tp / (2 * tp + fp + fn)
