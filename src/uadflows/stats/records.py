"""Per-image records of one run: what the bootstrap (and anyone re-analysing) needs, without
the maps.

Written by ``uadflows evaluate`` next to metrics.json (format in docs/statistics.md):
  records.csv   one row per test image: index, image, mask, label, defect, image_score,
                normal_pixels, anomalous_pixels, regions (the human-readable part)
  records.npz   the same columns as arrays, plus per-image histograms of the pixel scores
                on one global binning ``edges`` (K + 1 ascending edges, -inf and +inf at
                the ends; bin k holds edges[k] <= s < edges[k + 1]):
                  normal (N, K)     normal pixels of each image per bin
                  anomalous (N, K)  anomalous pixels per bin
                and, on the map AU-PRO is computed from (``pro_edges``, maybe another map):
                  pro_normal (N, K') normal pixels per bin
                  pro_mass (N, K')   sum over the image's 8-connected regions of the share
                                     of the region's pixels in each bin
                  regions (N,)       number of regions per image
                and, when the method segments (U-Flow), iou (N,): each image's IoU;
                and, when the run has validation images (docs/statistics.md):
                  val_image_threshold     the image threshold chosen on them (scalar)
                  val_pixel_threshold     the pixel threshold (scalar)
                  val_tp, val_fp, val_fn  (N,) each image's pixel counts at it (exact)

The binning: when the maps (at the model's resolution) hold at most ``bins`` distinct
values, the edges are those values and the histograms are exact. Otherwise the edges are
quantiles of the normal pixels, again of the normal pixels in the top ``1.1 * pro_limit``
share (where AU-PRO lives) and of the anomalous pixels, ``bins // 3`` each, so that no bin
holds more than about 3 / bins of either class: the binned point estimates stay within
1e-4 of the exact ones (tested; measured in benchmarks/bootstrap.py).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from uadflows.io import atomic_path
from uadflows.metrics.collect import EIGHT_CONNECTED

DEFAULT_BINS = 24576
TABLE = ("image", "mask", "label", "defect", "image_score", "normal_pixels", "anomalous_pixels",
         "regions")


class RecordsError(ValueError):
    """A records file that is missing, unreadable or inconsistent; names the file and key."""


def bin_edges(maps: list[np.ndarray], masks: list[np.ndarray], bins: int = DEFAULT_BINS,
              pro_limit: float = 0.3) -> np.ndarray:
    """Global bin edges from maps and bool masks of equal shapes (e.g. the model's maps and
    the masks resized to them): -inf, K - 1 inner edges, +inf."""
    values = np.concatenate([np.asarray(m, dtype=np.float64).ravel() for m in maps])
    anomalous = (np.concatenate([np.asarray(m).ravel() != 0 for m in masks])
                 if masks is not None and len(masks) else np.zeros(values.size, bool))
    levels = np.unique(values)
    if levels.size <= bins:
        inner = levels
    else:
        normal = np.sort(values[~anomalous])
        part = bins // 3
        top = normal[int(normal.size * max(0.0, 1.0 - 1.1 * pro_limit)):]
        pieces = [_quantiles(normal, part), _quantiles(top, part)]
        if anomalous.any():
            pieces.append(_quantiles(np.sort(values[anomalous]), part))
        inner = np.unique(np.concatenate(pieces))
    return np.concatenate(([-np.inf], inner, [np.inf]))


def _quantiles(sorted_values: np.ndarray, count: int) -> np.ndarray:
    """``count`` values of a sorted array at evenly spaced ranks (actual values, no
    interpolation, so that a discrete level always starts its own bin)."""
    if sorted_values.size == 0:
        return sorted_values
    ranks = np.linspace(0, sorted_values.size - 1, min(count, sorted_values.size)).astype(np.int64)
    return sorted_values[ranks]


class PixelRecorder:
    """Per-image histograms, filled one (map, bool mask) pair at a time (streaming: the
    evaluator calls it with each upsampled map as it goes)."""

    def __init__(self, n_images: int, edges: np.ndarray, regions: bool = True):
        self.edges = np.asarray(edges, dtype=np.float64)
        k = self.edges.size - 1
        self.normal = np.zeros((n_images, k), np.int64)
        self.anomalous = np.zeros((n_images, k), np.int64)
        self.mass = np.zeros((n_images, k), np.float64) if regions else None
        self.regions = np.zeros(n_images, np.int64)

    def __call__(self, index: int, score_map: np.ndarray, mask: np.ndarray) -> None:
        flat = mask.ravel()
        scores = score_map.ravel()
        if not flat.any():
            self.normal[index] = self._histogram(scores)
            return
        self.normal[index] = self._histogram(scores[~flat])
        inside = scores[flat]
        self.anomalous[index] = self._histogram(inside)
        if self.mass is not None:
            labelled, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
            sizes = np.bincount(labelled.ravel())
            self.mass[index] = self._histogram(inside, 1.0 / sizes[labelled.ravel()[flat]])
            self.regions[index] = count

    def _histogram(self, values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Counts (or weight sums) per bin. The image's values are sorted and the edges
        searched in them: ~10x faster than searching every value in the edges (the
        edges are few and the searches then walk memory in order)."""
        order = None if weights is None else np.argsort(values, kind="stable")
        ordered = np.sort(values) if order is None else values[order]
        below = np.searchsorted(ordered, self.edges[1:-1], side="left")  # values < each edge
        cut = np.concatenate(([0], below, [ordered.size]))
        if weights is None:
            return np.diff(cut)
        cumulative = np.concatenate(([0.0], np.cumsum(weights[order])))
        return np.diff(cumulative[cut])

    def fill(self, records: "Records", pro: "PixelRecorder | None" = None) -> "Records":
        """Put these histograms into ``records``; ``pro``: the recorder of the map AU-PRO
        is computed from when it is another one (MSFlow's)."""
        pro = pro or self
        records.edges, records.normal, records.anomalous = self.edges, self.normal, self.anomalous
        records.pro_edges, records.pro_normal = pro.edges, pro.normal
        records.pro_mass, records.regions = pro.mass, pro.regions
        return records


@dataclass
class Records:
    """One run's per-image records (see the module docstring). ``normal``/``anomalous``
    and the pro_* arrays are None for a dataset without ground truth."""

    image: np.ndarray
    mask: np.ndarray
    label: np.ndarray
    defect: np.ndarray
    image_score: np.ndarray
    edges: np.ndarray | None = None
    normal: np.ndarray | None = None
    anomalous: np.ndarray | None = None
    pro_edges: np.ndarray | None = None
    pro_normal: np.ndarray | None = None
    pro_mass: np.ndarray | None = None
    regions: np.ndarray | None = None
    iou: np.ndarray | None = None  # (N,) per-image IoU of a method's segmentation (U-Flow)
    pro_limit: float = 0.3
    # thresholds chosen on the validation images, and each image's pixel counts at them
    val_image_threshold: float | None = None
    val_pixel_threshold: float | None = None
    val_tp: np.ndarray | None = None
    val_fp: np.ndarray | None = None
    val_fn: np.ndarray | None = None

    @property
    def has_pixels(self) -> bool:
        return self.normal is not None

    def table(self) -> list[dict[str, Any]]:
        n = len(self.label)
        normal = self.normal.sum(1) if self.has_pixels else np.zeros(n, int)
        anomalous = self.anomalous.sum(1) if self.has_pixels else np.zeros(n, int)
        regions = self.regions if self.regions is not None else np.zeros(n, int)
        return [dict(index=i, image=str(self.image[i]), mask=str(self.mask[i]), label=int(self.label[i]),
                     defect=str(self.defect[i]), image_score=float(self.image_score[i]),
                     normal_pixels=int(normal[i]), anomalous_pixels=int(anomalous[i]),
                     regions=int(regions[i])) for i in range(n)]


def save_records(records: Records, npz_path: str | Path, csv_path: str | Path | None = None) -> None:
    """records.npz (compressed; every array, no pickled objects) and optionally records.csv."""
    arrays = {f.name: getattr(records, f.name) for f in fields(records)}
    arrays = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
    arrays = {k: (v.astype(str) if v.dtype == object else v) for k, v in arrays.items()}
    with atomic_path(npz_path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    if csv_path is not None:
        rows = records.table()
        with atomic_path(csv_path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=["index", *TABLE])
                writer.writeheader()
                writer.writerows(rows)


def load_records(npz_path: str | Path) -> Records:
    """Read records.npz (no pickle) and check that its arrays agree in size."""
    path = Path(npz_path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise RecordsError(f"{path}: unreadable records file ({e})") from None
    names = {f.name for f in fields(Records)}
    missing = [k for k in ("image", "mask", "label", "defect", "image_score") if k not in data]
    if missing:
        raise RecordsError(f"{path}: missing key(s) {missing}")
    unknown = sorted(set(data) - names)
    if unknown:
        raise RecordsError(f"{path}: unknown key(s) {unknown}")
    data["pro_limit"] = float(data.get("pro_limit", 0.3))
    for key in ("val_image_threshold", "val_pixel_threshold"):
        if key in data:
            data[key] = float(data[key])
    records = Records(**data)
    n = len(records.label)
    for key in ("image", "mask", "defect", "image_score", "normal", "anomalous", "pro_normal",
                "pro_mass", "regions", "iou", "val_tp", "val_fp", "val_fn"):
        value = getattr(records, key)
        if value is not None and len(value) != n:
            raise RecordsError(f"{path}: '{key}' has {len(value)} rows, 'label' has {n}")
    for hist, edges in (("normal", "edges"), ("anomalous", "edges"), ("pro_normal", "pro_edges"),
                        ("pro_mass", "pro_edges")):
        h, e = getattr(records, hist), getattr(records, edges)
        if h is not None and (e is None or h.shape[1] != e.size - 1):
            raise RecordsError(f"{path}: '{hist}' has {h.shape[1]} bins, '{edges}' "
                               f"{'is missing' if e is None else f'gives {e.size - 1}'}")
    return records


def records_from_maps(labels, scores, maps, masks, *, pro_limit: float = 0.3,
                      bins: int = DEFAULT_BINS, images=None, mask_paths=None, defects=None) -> Records:
    """Records from maps and masks of equal shapes (one resolution; the pipeline records
    the upsampled maps while it evaluates them, see uadflows/evaluate.py). ``masks`` None:
    image records only."""
    labels = np.asarray(labels).astype(np.int8)
    n = labels.size
    names = np.array([str(i) for i in range(n)]) if images is None else np.asarray(images, dtype=str)
    records = Records(
        image=names,
        mask=np.array([""] * n) if mask_paths is None else np.asarray(mask_paths, dtype=str),
        label=labels,
        defect=np.where(labels == 1, "defect", "good") if defects is None else np.asarray(defects, dtype=str),
        image_score=np.asarray(scores, dtype=np.float64), pro_limit=float(pro_limit),
    )
    if masks is None:
        return records
    bool_masks = [np.asarray(m) != 0 for m in masks]
    edges = bin_edges(list(maps), bool_masks, bins, pro_limit)
    recorder = PixelRecorder(n, edges)
    for i, (m, k) in enumerate(zip(maps, bool_masks)):
        recorder(i, np.asarray(m), k)
    return recorder.fill(records)
