"""Stratified bootstrap over test images, for every metric the evaluator reports.

A resample draws the normal images and the defective images separately, each with
replacement and as many as there are (so every resample has both classes, as the test set
does), and keeps every image whole: its image score and all its pixels (and regions) go
together. It is stored as counts: ``counts[b, i]`` = how often image i was drawn in resample
b (a multinomial draw per class, seeded with ``numpy.random.default_rng(seed)``).

Image metrics use the exact image scores (sorted once into distinct levels); pixel metrics
and AU-PRO use the per-image histograms of records.py (one global binning), so each
resample is a (counts x histograms) matrix product followed by cumulative sums: no pixel is
touched and nothing is re-sorted per resample (see curves.py).

The 95 % interval is the percentile interval: the 2.5 % and 97.5 % quantiles of the
resampled values (docs/statistics.md says when it is valid).
"""

from __future__ import annotations

import numpy as np

from uadflows.metrics.thresholds import SUFFIX, binary_metrics
from uadflows.stats import curves
from uadflows.stats.records import Records

IMAGE = ("image_auroc", "image_ap", "image_f1_max")
PIXEL = ("pixel_auroc", "pixel_ap", "pixel_f1_max", "au_pro")
_CELLS = 1 << 23  # (resamples x bins) per block: bounds the temporaries to ~100 MB


def resample_counts(labels: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, N) int64: how often each image is drawn, normal and defective separately."""
    labels = np.asarray(labels).astype(bool)
    if resamples < 1:
        raise ValueError(f"resamples: {resamples}, expected at least 1")
    rng = np.random.default_rng(seed)
    counts = np.zeros((resamples, labels.size), np.int64)
    for group in (np.flatnonzero(~labels), np.flatnonzero(labels)):
        if group.size:
            counts[:, group] = rng.multinomial(group.size, np.full(group.size, 1.0 / group.size),
                                               size=resamples)
    return counts


def replicates(records: Records, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric for each row of ``counts`` ((B, N) image weights): {name: (B,) values}."""
    counts = np.asarray(counts, dtype=np.float64)
    out = _image(records.label, records.image_score, counts)
    if records.has_pixels:
        out.update(_pixel(records, counts))
    if records.iou is not None:  # mIoU: the mean over the drawn images
        out["miou"] = counts @ np.asarray(records.iou, dtype=np.float64) / counts.sum(axis=1)
    out.update(_thresholded(records, counts))
    return out


def _ratios(prefix: str, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """precision, recall, F1 of the resamples' counts (B,), named as the evaluator names them."""
    return {f"{prefix}_{k}{SUFFIX}": v for k, v in binary_metrics(tp, fp, fn).items()}


def _thresholded(records: Records, counts: np.ndarray) -> dict[str, np.ndarray]:
    """The metrics at the validation thresholds: the thresholds are fixed (chosen on other
    images), so a resample only re-weights each test image's exact counts."""
    out: dict[str, np.ndarray] = {}
    if records.val_image_threshold is not None:
        y = np.asarray(records.label).astype(bool)
        pred = np.asarray(records.image_score, dtype=np.float64) >= records.val_image_threshold
        out.update(_ratios("image", counts @ (pred & y), counts @ (pred & ~y), counts @ (~pred & y)))
    if records.val_tp is not None:
        tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (records.val_tp, records.val_fp, records.val_fn))
        out.update(_ratios("pixel", counts @ tp, counts @ fp, counts @ fn))
        union = tp + fp + fn
        iou = np.divide(tp, union, out=np.ones_like(tp), where=union > 0)
        out[f"seg_iou{SUFFIX}"] = counts @ iou / counts.sum(axis=1)
    return out


def point_estimates(records: Records) -> dict[str, float]:
    """Every metric on the test set itself (all weights 1); the pixel ones are the binned
    values, within 1e-4 of the exact ones of ``uadflows.metrics`` (tested)."""
    ones = np.ones((1, len(records.label)))
    return {k: float(v[0]) for k, v in replicates(records, ones).items()}


def intervals(records: Records, resamples: int = 1000, seed: int = 0, level: float = 0.95
              ) -> dict[str, tuple[float, float]]:
    """{metric: (low, high)}: percentile interval of the stratified bootstrap."""
    values = replicates(records, resample_counts(records.label, resamples, seed))
    return {k: percentile_interval(v, level) for k, v in values.items()}


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The (1 - level) / 2 and (1 + level) / 2 quantiles, NaN resamples left out."""
    if not 0 < level < 1:
        raise ValueError(f"level: {level}, expected a probability in (0, 1)")
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _image(labels: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    labels = np.asarray(labels).astype(bool)
    levels, level_of = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    onehot = np.zeros((labels.size, levels.size))
    onehot[np.arange(labels.size), level_of] = 1.0
    negatives = (counts * ~labels) @ onehot
    positives = (counts * labels) @ onehot
    values = curves.binary_metrics(negatives, positives)
    return {f"image_{k}": v for k, v in values.items()}


def _pixel(records: Records, counts: np.ndarray) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {k: [] for k in PIXEL}
    normal = records.normal.astype(np.float64)
    anomalous = records.anomalous.astype(np.float64)
    same_map = records.pro_normal.shape == records.normal.shape and \
        np.array_equal(records.pro_edges, records.edges)  # AU-PRO on the same map: reuse
    pro_normal = normal if same_map else records.pro_normal.astype(np.float64)
    pro_mass = records.pro_mass
    regions = records.regions.astype(np.float64)
    block = max(1, _CELLS // max(normal.shape[1], pro_normal.shape[1]))
    for start in range(0, counts.shape[0], block):
        c = counts[start:start + block]
        negatives = c @ normal
        values = curves.binary_metrics(negatives, c @ anomalous)
        for k, v in values.items():
            out[f"pixel_{k}"].append(v)
        pro_negatives = negatives if same_map else c @ pro_normal
        out["au_pro"].append(curves.au_pro(pro_negatives, c @ pro_mass, c @ regions, records.pro_limit))
    return {k: np.concatenate(v) for k, v in out.items()}
