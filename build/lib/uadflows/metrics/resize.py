"""Bringing maps and masks to one resolution before scoring.

- Default protocol ("original"): each anomaly map is upsampled bilinearly
  (``torch.nn.functional.interpolate``, ``align_corners=False``, as the methods upsample
  their maps) to its ground-truth mask's size; masks stay as read from disk.
- Option ("model"): each mask is resized to its map's size with nearest-neighbour at pixel
  centres (``mode="nearest-exact"``, the same rule as PIL's NEAREST). Torch's legacy
  "nearest" shifts the sampling grid by half a pixel, which would move defects.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from uadflows.metrics.inputs import (
    MetricsError,
    as_item_list,
    check_map,
    check_mask,
    check_same_length,
)


def upsample_map(score_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of one (h, w) float map to ``size`` = (H, W), same float dtype."""
    if tuple(score_map.shape) == tuple(size):
        return score_map
    import torch  # only here: the rest of the metrics never needs torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(score_map))[None, None]
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)[0, 0].numpy()


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize (pixel centres) of one bool mask to ``size`` = (H, W)."""
    if tuple(mask.shape) == tuple(size):
        return mask
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8))[None, None]
    return F.interpolate(t, size=tuple(size), mode="nearest-exact")[0, 0].numpy().astype(bool)


def check_shapes(shapes: Any, n: int) -> list[tuple[int, int] | None]:
    """``mask_shapes``: None, or one (H, W) per image (None items allowed)."""
    if shapes is None:
        return [None] * n
    if len(shapes) != n:
        raise MetricsError(f"mask_shapes: {len(shapes)} entries for {n} images")
    out: list[tuple[int, int] | None] = []
    for i, s in enumerate(shapes):
        if s is not None and (len(s) != 2 or min(int(v) for v in s) < 1):
            raise MetricsError(f"mask_shapes[{i}]: {s!r}, expected (height, width)")
        out.append(None if s is None else (int(s[0]), int(s[1])))
    return out


def original_mask(mask: Any, index: int, shape: tuple[int, int] | None) -> np.ndarray:
    """A mask at its own size; None needs the image's size from ``mask_shapes``."""
    if mask is None and shape is None:
        raise MetricsError(
            f"masks[{index}]: None at resolution 'original' needs the image's size: "
            "pass mask_shapes (one (H, W) per image) or an explicit all-zero mask")
    return check_mask(mask, index, shape)


def to_mask_resolution(maps: Any, masks: Any, mask_shapes: Any = None) -> np.ndarray | list[np.ndarray]:
    """Each map upsampled (bilinear) to its mask's size. Masks: arrays (or None for a good
    image, whose size then comes from ``mask_shapes``). Returns an (N, H, W) array when
    ``masks`` is an array, else a list (sizes may differ)."""
    map_list, mask_list = as_item_list(maps, "maps"), as_item_list(masks, "masks")
    n = check_same_length(maps=map_list, masks=mask_list)
    shapes = check_shapes(mask_shapes, n)
    out = [upsample_map(check_map(m, i), original_mask(mask_list[i], i, shapes[i]).shape)
           for i, m in enumerate(map_list)]
    return np.stack(out) if isinstance(masks, np.ndarray) else out


def to_map_resolution(maps: Any, masks: Any) -> np.ndarray | list[np.ndarray]:
    """Each mask binarised (non-zero = anomalous) and resized (nearest) to its map's size;
    a None mask becomes all False. Returns a bool (N, h, w) array when ``maps`` is an
    array, else a list."""
    map_list, mask_list = as_item_list(maps, "maps"), as_item_list(masks, "masks")
    check_same_length(maps=map_list, masks=mask_list)
    out = []
    for i, m in enumerate(map_list):
        size = np.shape(m)
        if len(size) != 2:
            raise MetricsError(f"maps[{i}]: shape {size}, expected a 2-D (H, W) map")
        mask = mask_list[i]
        out.append(np.zeros(size, bool) if mask is None else resize_mask(check_mask(mask, i, None), size))
    return np.stack(out) if isinstance(maps, np.ndarray) else out
