"""mIoU of a predicted segmentation (e.g. U-Flow's log NFA >= 0) against the ground truth."""

from __future__ import annotations

from typing import Any

import numpy as np

from uadflows.metrics.inputs import as_item_list, check_mask, check_same_length


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
