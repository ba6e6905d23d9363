"""``evaluate``: every metric that applies to one test set, as the pipeline's metrics.json.

Full-resolution maps are never all held at once: at resolution "original" each map is
upsampled when its turn comes and only its pixel scores are kept (see collect.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from uadflows.metrics.collect import collect
from uadflows.metrics.image import image_metrics
from uadflows.metrics.inputs import (
    MetricsError,
    as_item_list,
    check_limit,
    check_map,
    check_mask,
    check_same_length,
    common_dtype,
)
from uadflows.metrics.pixel import metrics_from_scores
from uadflows.metrics.resize import check_shapes, original_mask, resize_mask, upsample_map
from uadflows.metrics.segmentation import image_iou

RESOLUTIONS = ("original", "model")


def evaluate(
    labels: Any,
    scores: Any,
    maps: Any,
    masks: Any,
    *,
    resolution: str = "original",
    pro_limit: float = 0.3,
    segmentations: Any = None,
    mask_shapes: Any = None,
    on_pair: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
    on_iou: Callable[[int, float], None] | None = None,
    extra_pro_limits: tuple[float, ...] = (),
) -> dict[str, Any]:
    """Image metrics, and when ``masks`` is given pixel metrics (and mIoU), as plain floats.

    labels, scores: one per test image (0/1 labels, image scores).
    maps: anomaly maps at the model's resolution, (N, h, w) array or list of (h, w).
    masks: ground truth at its original size (bool or 0/255), a list when sizes differ;
        None for a dataset without ground truth (then only image metrics). A None item is
        a good image: at resolution "original" its size must come from ``mask_shapes``.
    resolution: "original" (maps upsampled bilinear to each mask, the official protocol)
        or "model" (masks resized nearest to each map).
    segmentations: optional bool maps at map resolution (e.g. U-Flow's log NFA >= 0):
        adds ``miou``, computed at the same resolution as the other pixel metrics (at
        "original" the segmentation is resized nearest to the mask).
    mask_shapes: optional (H, W) per image, the original sizes (needed only for None masks
        at resolution "original").
    on_pair: optional callable, called with (index, score map, bool mask) for each image
        as it is evaluated, at the evaluation's resolution (e.g. to record per-image
        histograms, uadflows.stats.records) without upsampling the maps a second time.
    on_iou: optional callable, called with (index, IoU) of each image's segmentation.
    extra_pro_limits: more FPR limits for AU-PRO, each adding ``au_pro_{limit}``.

    Returns image_auroc, image_ap, image_f1_max, resolution, pro_limit; with masks also
    pixel_auroc, pixel_ap, pixel_f1_max, au_pro; with segmentations also miou.
    """
    if resolution not in RESOLUTIONS:
        raise MetricsError(f"resolution: {resolution!r}, expected one of {RESOLUTIONS}")
    pro_limit = check_limit(pro_limit, "pro_limit")
    extra_pro_limits = tuple(check_limit(x, "extra_pro_limits") for x in extra_pro_limits)
    out: dict[str, Any] = image_metrics(labels, scores)
    out["resolution"] = resolution
    out["pro_limit"] = pro_limit
    if masks is None:
        if segmentations is not None:
            raise MetricsError("segmentations: given but masks is None; mIoU needs ground truth")
        return out
    if maps is None:
        raise MetricsError("maps: None while masks are given; pixel metrics need anomaly maps")

    map_list = [check_map(m, i) for i, m in enumerate(as_item_list(maps, "maps"))]
    mask_list = as_item_list(masks, "masks")
    seg_list = None if segmentations is None else as_item_list(segmentations, "segmentations")
    n = check_same_length(labels=np.asarray(labels), maps=map_list, masks=mask_list, segmentations=seg_list)
    shapes = check_shapes(mask_shapes, n)

    if resolution == "original":
        sizes = [_original_size(mask_list[i], shapes[i], i) for i in range(n)]
        pairs = _original_pairs(map_list, mask_list, shapes)
    else:
        sizes = [m.shape for m in map_list]
        pairs = _model_pairs(map_list, mask_list)
    if on_pair is not None:
        pairs = _observed(pairs, on_pair)
    capacity = sum(h * w for h, w in sizes)
    collected = collect(pairs, capacity, common_dtype(map_list), regions=True)
    out.update(metrics_from_scores(collected, pro_limit, extra_pro_limits))

    if seg_list is not None:
        ious = []
        for i, seg in enumerate(seg_list):
            pred = check_mask(seg, i, None, name="segmentations")
            if resolution == "original":
                gt = original_mask(mask_list[i], i, shapes[i])
                pred = resize_mask(pred, gt.shape)
            else:
                gt = np.zeros(pred.shape, bool) if mask_list[i] is None else \
                    resize_mask(check_mask(mask_list[i], i, None), pred.shape)
            ious.append(image_iou(pred, gt))
            if on_iou is not None:
                on_iou(i, ious[-1])
        out["miou"] = float(np.mean(ious))
    return out


def _original_size(mask: Any, shape: tuple[int, int] | None, index: int) -> tuple[int, int]:
    if mask is None:
        if shape is None:
            original_mask(None, index, None)  # raises the error that explains mask_shapes
        return shape  # type: ignore[return-value]
    size = np.shape(mask)
    if len(size) != 2:
        raise MetricsError(f"masks[{index}]: shape {size}, expected a 2-D (H, W) mask")
    return size[0], size[1]


def _observed(pairs: Iterator[tuple[np.ndarray, np.ndarray]],
              on_pair: Callable[[int, np.ndarray, np.ndarray], None]
              ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for i, (score_map, mask) in enumerate(pairs):
        on_pair(i, score_map, mask)
        yield score_map, mask


def _original_pairs(maps: list[np.ndarray], masks: list[Any], shapes: list[Any]
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for i, m in enumerate(maps):
        mask = original_mask(masks[i], i, shapes[i])
        yield upsample_map(m, mask.shape), mask


def _model_pairs(maps: list[np.ndarray], masks: list[Any]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for i, m in enumerate(maps):
        mask = masks[i]
        if mask is None:
            yield m, np.zeros(m.shape, bool)
        else:
            yield m, resize_mask(check_mask(mask, i, None), m.shape)
