"""One pass over (map, mask) pairs that keeps only what the exact pixel metrics need.

Every pixel metric here is exact and needs, at most:
- the scores of the normal pixels (one float per pixel, no label, no index array);
- the scores of the anomalous pixels, and for AU-PRO the weight 1/|region| of each
  (8-connected ground-truth regions).
Both are filled image by image, so the caller can stream full-resolution maps (e.g.
upsample one map at a time) and the peak memory stays about one float per pixel.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from uadflows.metrics.inputs import (
    MetricsError,
    as_item_list,
    check_map,
    check_mask,
    check_same_length,
    common_dtype,
)

# 8-connectivity, as the official MVTec AD evaluation labels its ground-truth regions
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass
class PixelScores:
    """negatives: (N,) scores of every normal pixel, unsorted; the metric functions may
    reorder it in place (it is a private buffer). positives: (P,) scores of every
    anomalous pixel. weights: (P,) 1/|region| of each anomalous pixel (None when regions
    were not asked for). n_regions: number of ground-truth regions over all images."""

    negatives: np.ndarray
    positives: np.ndarray
    weights: np.ndarray | None
    n_regions: int

    def check_both_classes(self) -> None:
        if self.positives.size == 0:
            raise MetricsError("masks: no anomalous pixel in any mask; "
                               "pixel metrics need ground truth regions")
        if self.negatives.size == 0:
            raise MetricsError("masks: every pixel is anomalous; pixel metrics need normal pixels")


def collect(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    capacity: int,
    dtype: np.dtype,
    regions: bool,
) -> PixelScores:
    """Consume (score map, bool mask) pairs of equal shapes (already checked).

    capacity: total number of pixels (an upper bound on the normal ones), so the normal
    scores go into one preallocated buffer instead of a list that is concatenated (which
    would briefly double the memory).
    """
    buffer = np.empty(capacity, dtype=dtype)
    filled = 0
    positive_parts: list[np.ndarray] = []
    weight_parts: list[np.ndarray] = []
    n_regions = 0
    for score_map, mask in pairs:
        size = score_map.size
        if filled + size > capacity:
            raise MetricsError(f"more pixels than the announced {capacity} (internal error)")
        if not mask.any():  # a good image: every pixel is normal, no boolean indexing needed
            buffer[filled:filled + size] = score_map.ravel()
            filled += size
            continue
        normal = score_map[~mask]
        buffer[filled:filled + normal.size] = normal
        filled += normal.size
        positive_parts.append(score_map[mask].astype(dtype, copy=False))
        if regions:
            labelled, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
            region_sizes = np.bincount(labelled.ravel())
            weight_parts.append(1.0 / region_sizes[labelled[mask]])
            n_regions += count
    positives = np.concatenate(positive_parts) if positive_parts else np.empty(0, dtype=dtype)
    weights = None
    if regions:
        weights = np.concatenate(weight_parts) if weight_parts else np.empty(0, dtype=np.float64)
    return PixelScores(buffer[:filled], positives, weights, n_regions)


def collect_pairs(maps: Any, masks: Any, regions: bool) -> PixelScores:
    """Check maps and masks of equal shapes (as the public functions take them) and collect.

    maps: float (N, H, W) array or list of (H, W) arrays; masks: same shapes, bool or
    numbers (non-zero = anomalous), or None items for good images.
    """
    map_list = as_item_list(maps, "maps")
    mask_list = as_item_list(masks, "masks")
    check_same_length(maps=map_list, masks=mask_list)
    checked = [check_map(m, i) for i, m in enumerate(map_list)]
    pairs = ((m, check_mask(mask_list[i], i, m.shape)) for i, m in enumerate(checked))
    return collect(pairs, sum(m.size for m in checked), common_dtype(checked), regions)
