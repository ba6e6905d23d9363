"""Evaluation: ``scores.npz`` + ground truth -> ``metrics.json``, one evaluator for all.

Every method's maps go through the same ``uadflows.metrics.evaluate`` at the same
resolution (by default the ground truth's original size, maps upsampled bilinear).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from uadflows import stats as S
from uadflows.metrics import thresholds as T
from uadflows.io import read_json, write_json
from uadflows.spec import JobSpec


def _defects(d: dict[str, np.ndarray]) -> np.ndarray:
    """Defect type per test image: its folder (MVTec layout test/<defect>/<image>)."""
    return np.array([Path(str(p)).parent.name if int(label) else "good"
                     for p, label in zip(d["images"], d["labels"])])


# Protocol extras of some datasets: MVTec AD 2 reports AU-PRO at two FPR limits
# (Heckler-Kram et al. 2025, arXiv 2503.21622); Real-IAD adds a sample-level score over the
# views (Wang et al. 2024, arXiv 2403.12580: S-AUROC).
EXTRA_PRO_LIMITS = {"mvtec_ad2": (0.05, 0.3)}


def _masks(mask_paths: np.ndarray, image_paths: np.ndarray
           ) -> tuple[list[np.ndarray | None] | None, list[tuple[int, int]]]:
    """Ground truth at original size (None for a good image: only its size, from the header,
    is kept, so large good images cost no memory) and every image's (H, W); masks None when
    the dataset has no masks at all."""
    from uadflows.data import image_size, read_mask

    shapes = [image_size(img) for img in image_paths]
    if not any(mask_paths):
        return None, shapes
    return [read_mask(m) if m else None for m in mask_paths], shapes


def _validation_segmentation(d: dict, masks: list | None, shapes: list) -> dict[str, float]:
    """MVTec AD 2: the threshold from the validation maps (mean + 3 std of their pixels, at
    each image's full size) and the SegF1 of the test maps binarized with it (full size)."""
    from uadflows.data import image_size
    from uadflows.metrics.resize import upsample_map
    from uadflows.metrics.segmentation import mean_plus_std_threshold, segmentation_f1

    validation = (upsample_map(m, image_size(p))
                  for m, p in zip(d["validation_maps"], d["validation_images"]))
    threshold = mean_plus_std_threshold(validation, k=3.0)
    if masks is None:
        return {"validation_threshold": threshold}
    pairs = ((upsample_map(m, shape), np.zeros(shape, bool) if mask is None else mask)
             for m, mask, shape in zip(d["maps"], masks, shapes))
    return {"validation_threshold": threshold, "seg_f1": segmentation_f1(pairs, threshold)}


def _validation_thresholds(d: dict, spec: JobSpec, pixels: bool) -> dict[str, Any] | None:
    """The image and pixel thresholds chosen on the normal validation images (their scores;
    their maps at the evaluation's resolution), and what they were chosen on; None when the
    run has no validation images (fraction 0): then no thresholded metric is reported."""
    from uadflows.data import image_size
    from uadflows.metrics.resize import upsample_map

    if "validation_scores" not in d or len(d["validation_scores"]) == 0:
        return None
    ev = spec.evaluation
    v = spec.validation
    out: dict[str, Any] = {
        "validation": {"split": "official" if v == "official" else "held-out from train",
                       **({} if v == "official" else v.model_dump()),
                       "n": int(len(d["validation_scores"])),
                       "images": [str(p) for p in d["validation_images"]]},
        "image": {**ev.image_threshold.model_dump(),
                  "value": T.image_threshold(d["validation_scores"], ev.image_threshold)},
    }
    if pixels:
        maps = (upsample_map(m, image_size(p)) if ev.resolution == "original" else m
                for m, p in zip(d["validation_maps"], d["validation_images"]))
        out["pixel"] = {**ev.pixel_threshold.model_dump(),
                        "value": T.pixel_threshold(maps, ev.pixel_threshold)}
    return out


def _both(*callbacks):
    """One ``on_pair`` calling each of ``callbacks`` that is not None."""
    live = [c for c in callbacks if c is not None]
    if not live:
        return None

    def call(i, score_map, mask):
        for c in live:
            c(i, score_map, mask)
    return call


def _sample_level(labels: np.ndarray, scores: np.ndarray, images: np.ndarray) -> dict[str, float]:
    """Real-IAD's sample-level metrics: a physical sample's score is the maximum over its
    views, and it is anomalous when any view is (Real-IAD's S-AUROC)."""
    import pandas as pd

    from uadflows import metrics as M
    from uadflows.data.realiad import sample_groups

    frame = pd.DataFrame({"group": sample_groups(list(images)), "label": labels, "score": scores})
    per_sample = frame.groupby("group", sort=True).max()
    out = M.image_metrics(per_sample["label"].to_numpy(), per_sample["score"].to_numpy())
    return {f"sample_{k[len('image_'):]}": v for k, v in out.items()}


def evaluate(spec_json: str | Path, summary_json: str | Path, scores_npz: str | Path,
             out_json: str | Path) -> dict[str, Any]:
    """Torch-free: the job spec, train's weight-free summary and the scores."""
    from uadflows import metrics as M

    spec, summary = JobSpec.load(spec_json), read_json(summary_json)
    key = {k: getattr(spec, k) for k in ("sweep", "dataset", "category", "model", "method", "backbone", "seed")}
    ev = {"resolution": spec.evaluation.resolution, "pro_limit": spec.evaluation.pro_limit}
    result: dict[str, Any] = {
        "key": key, "protocol": spec.protocol, "resolution": ev["resolution"],
        "pro_limit": ev["pro_limit"], "spec": spec.to_dict(), "weights": spec.weights,
        # training health verdict (health.py); best_epoch: only under protocol best-on-test
        "health": summary.get("health"), "best_epoch": summary.get("best_epoch"),
    }
    with np.load(scores_npz) as z:
        d = {k: z[k] for k in z.files}
    # the job's real times (MLflow shows them): training's start to scoring's end
    result["times"] = {"started": summary.get("started"),
                       "ended": float(d["ended"]) if "ended" in d else summary.get("ended")}
    result["provenance"] = {k: v for k, v in summary.items() if k.endswith("_version")
                            or k in ("git_commit", "index_digest")}
    if str(d["status"]) != "ok":
        result.update(status="failed", error=summary.get("error") or str(d.get("error", "")))
        write_json(out_json, result)
        return result

    labels, scores = d["labels"].astype(int), d["image_scores"].astype(np.float64)
    maps = list(d["maps"])
    masks, shapes = _masks(d["masks"], d["images"])
    # U-Flow's NFA segmentation (mIoU) needs ground truth like every pixel metric.
    segmentations = list(d["log_nfa"] > 0) if "log_nfa" in d and masks is not None else None
    if masks is None:
        result["note"] = "no ground-truth masks: image-level metrics only"
    fmt = spec.format
    st = spec.statistics.model_dump()
    records = S.records_from_maps(labels, scores, maps, None, pro_limit=ev["pro_limit"],
                                  images=d["images"], mask_paths=d["masks"], defects=_defects(d))
    # masks at the maps' size, once: the records' binning and the plotted PRO curve use them
    small_masks = None if masks is None else M.to_map_resolution(maps, masks)
    recorder = None if masks is None else S.PixelRecorder(
        len(labels), S.bin_edges(maps, small_masks, st["bins"], ev["pro_limit"]))
    thresholds = _validation_thresholds(d, spec, masks is not None)
    counter = None if thresholds is None or masks is None else \
        T.PixelCounter(len(labels), thresholds["pixel"]["value"])
    ious = np.full(len(labels), np.nan)
    metrics = M.evaluate(labels, scores, maps, masks, resolution=ev["resolution"],
                         pro_limit=ev["pro_limit"], segmentations=segmentations,
                         mask_shapes=shapes, extra_pro_limits=EXTRA_PRO_LIMITS.get(fmt, ()),
                         on_pair=_both(recorder, counter), on_iou=ious.__setitem__)
    if segmentations is not None:
        records.iou = ious
    if thresholds is not None:  # next to the oracle F1-max, each named as what it is
        at = T.image_metrics_at(labels, scores, thresholds["image"]["value"])
        records.val_image_threshold = thresholds["image"]["value"]
        if counter is not None:
            at.update(counter.metrics())
            records.val_pixel_threshold = counter.threshold
            records.val_tp, records.val_fp, records.val_fn = counter.tp, counter.fp, counter.fn
        metrics.update({f"{k}{T.SUFFIX}": v for k, v in at.items()})
    if fmt == "realiad":
        metrics.update(_sample_level(labels, scores, d["images"]))
    if fmt == "mvtec_ad2" and "validation_maps" in d:  # the official SegF1, as published
        metrics.update(_validation_segmentation(d, masks, shapes))
    pro_key = str(d.get("pro_map", "maps"))
    pro_recorder = recorder
    if masks is not None and pro_key != "maps":  # the paper's PRO is on another map
        pro_maps = list(d[pro_key])
        pro_recorder = S.PixelRecorder(len(labels), S.bin_edges(
            pro_maps, M.to_map_resolution(pro_maps, masks), st["bins"], ev["pro_limit"]))
        if ev["resolution"] == "original":
            pro_maps, pro_masks = M.to_mask_resolution(pro_maps, masks, shapes), masks
        else:
            pro_masks = M.to_map_resolution(pro_maps, masks)
        for i, (m, k) in enumerate(zip(pro_maps, pro_masks)):  # a good image's mask is None
            pro_recorder(i, m, np.zeros(np.shape(m), bool) if k is None else np.asarray(k) != 0)
        metrics["au_pro"] = M.au_pro(pro_maps, pro_masks, limit=ev["pro_limit"])
        result["pro_map"] = pro_key
    if recorder is not None:
        recorder.fill(records, pro_recorder)
    out_dir = Path(out_json).parent
    S.save_records(records, out_dir / "records.npz", out_dir / "records.csv")
    for k in [k for k in d if k.startswith("score_") and d[k].ndim == 1]:
        extra = M.image_metrics(labels, d[k].astype(np.float64))
        metrics.update({f"{m}_{k[len('score_'):]}": v for m, v in extra.items()})
    metrics.pop("resolution", None)
    metrics.pop("pro_limit", None)
    binned = S.point_estimates(records)
    bounds = S.intervals(records, st["resamples"], st["seed"], st["level"])
    statistics = {**st, "records": "records.npz",
                  "intervals": {k: list(v) for k, v in bounds.items() if k in metrics},
                  "binning_error": {k: abs(binned[k] - metrics[k]) for k in S.PIXEL if k in metrics}}

    curves = {"roc": [a.tolist() for a in M.roc_points(labels, scores, max_points=500)]}
    if masks is not None:
        # the plotted curve only: at map resolution, which is cheap (the metric is exact above)
        fpr, pro = M.pro_curve(maps, small_masks, limit=ev["pro_limit"])
        curves["pro"] = [np.asarray(fpr).tolist()[:2000], np.asarray(pro).tolist()[:2000]]
    n = len(labels)
    result.update(
        status="ok",
        metrics=metrics,
        n_test=n,
        n_anomalous=int(labels.sum()),
        cost={
            "flow_params": summary["flow_params"],
            "epochs": summary["epochs"],
            "train_seconds": round(summary["train_seconds"], 3),
            "infer_images_per_s": n / max(float(d["flow_seconds"]), 1e-9),
            "peak_rss_mb": summary.get("peak_rss_mb"),
            "peak_gpu_mb": summary.get("peak_gpu_mb"),
        },
        curves=curves,
        statistics=statistics,
        # the validation split and the thresholds chosen on it (None: no validation images)
        thresholds=thresholds,
    )
    write_json(out_json, result)
    return result

