"""Checking and normalising what the metric functions receive.

Every public metric goes through these helpers, so a bad input always fails the same way:
a ``MetricsError`` whose message names the argument, the item index and what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class MetricsError(ValueError):
    """Bad input to a metric; the message names the argument (and item) and the fault."""


def as_item_list(items: Any, name: str) -> list[Any]:
    """An (N, H, W) array or a sequence of N (H, W) items -> a list of N items (no copies)."""
    if items is None:
        raise MetricsError(f"{name}: got None, expected an (N, H, W) array or a list of (H, W) arrays")
    if isinstance(items, np.ndarray):
        if items.ndim != 3:
            raise MetricsError(f"{name}: array of shape {items.shape}, expected (N, H, W)")
        return list(items)
    if hasattr(items, "detach"):  # a torch tensor: same rule as an array
        return as_item_list(items.detach().cpu().numpy(), name)
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        raise MetricsError(f"{name}: {type(items).__name__} is not an array or a list of arrays")
    if len(items) == 0:
        raise MetricsError(f"{name}: empty, expected at least one image")
    return list(items)


def check_map(item: Any, index: int, name: str = "maps") -> np.ndarray:
    """One anomaly map: 2-D, real-valued, finite. Float16 and integer maps are widened
    (float32 / float64) so that sorting and interpolation are exact on what was given."""
    m = np.asarray(item.detach().cpu().numpy() if hasattr(item, "detach") else item)
    if m.ndim != 2:
        raise MetricsError(f"{name}[{index}]: shape {m.shape}, expected a 2-D (H, W) map")
    if m.dtype == np.float16:
        m = m.astype(np.float32)
    elif m.dtype.kind in "iu":
        m = m.astype(np.float64)
    elif m.dtype.kind != "f":
        raise MetricsError(f"{name}[{index}]: dtype {m.dtype}, expected real-valued scores")
    if m.size == 0:
        raise MetricsError(f"{name}[{index}]: empty map {m.shape}")
    if not np.isfinite(m).all():
        raise MetricsError(f"{name}[{index}]: contains NaN or infinite scores")
    return m


def check_mask(item: Any, index: int, shape: tuple[int, int] | None, name: str = "masks") -> np.ndarray:
    """One ground-truth mask -> bool (H, W): non-zero is anomalous (bool, 0/1, 0/255 and
    VisA class values alike). ``None`` means "no anomaly" and needs ``shape``; when
    ``shape`` is given the mask must have it."""
    if item is None:
        if shape is None:
            raise MetricsError(f"{name}[{index}]: None, and the image's size is unknown")
        return np.zeros(shape, dtype=bool)
    m = np.asarray(item.detach().cpu().numpy() if hasattr(item, "detach") else item)
    if m.ndim != 2:
        raise MetricsError(f"{name}[{index}]: shape {m.shape}, expected a 2-D (H, W) mask")
    if m.dtype.kind not in "biuf":
        raise MetricsError(f"{name}[{index}]: dtype {m.dtype}, expected bool or numbers")
    if shape is not None and m.shape != tuple(shape):
        raise MetricsError(f"{name}[{index}]: shape {m.shape} does not match the map's {tuple(shape)}")
    return m if m.dtype == bool else m > 0


def common_dtype(maps: list[np.ndarray]) -> np.dtype:
    """float32 when every map is float32 (half the memory), else float64."""
    return np.dtype(np.float32) if all(m.dtype == np.float32 for m in maps) else np.dtype(np.float64)


def check_same_length(**named: Sequence[Any] | None) -> int:
    """All given sequences (None skipped) have one length; returns it."""
    lengths = {k: len(v) for k, v in named.items() if v is not None}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise MetricsError(f"different numbers of images ({listed})")
    return next(iter(lengths.values()))


def check_labels_scores(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Image labels (0/1 or bool) and scores (finite floats), 1-D and of one length."""
    y = np.asarray(labels)
    s = np.asarray(scores)
    if y.ndim != 1 or s.ndim != 1:
        raise MetricsError(f"labels {y.shape} and scores {s.shape} must be 1-D, one value per image")
    if y.shape != s.shape:
        raise MetricsError(f"labels has {y.size} values but scores has {s.size}")
    if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
        raise MetricsError("labels: expected 0 (normal) / 1 (anomalous) or bool values")
    if s.dtype.kind not in "iuf" or not np.isfinite(s).all():
        raise MetricsError("scores: expected finite real numbers")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise MetricsError("labels: need both normal and anomalous images for AUROC/AP/F1")
    return y, s


def check_limit(limit: float, name: str = "limit") -> float:
    """The FPR integration limit of AU-PRO: a number in (0, 1]."""
    if isinstance(limit, bool) or not isinstance(limit, (int, float, np.floating)) or not 0 < limit <= 1:
        raise MetricsError(f"{name}: {limit!r}, expected a number in (0, 1]")
    return float(limit)
