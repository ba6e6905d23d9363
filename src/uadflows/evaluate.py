"""Evaluation: ``scores.npz`` + ground truth -> ``metrics.json``, one evaluator for all.

Every method's maps go through the same ``uadflows.metrics.evaluate`` at the same
resolution (by default the ground truth's original size, maps upsampled bilinear).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from uadflows.io import read_json, write_json
from uadflows.spec import JobSpec


def _masks(mask_paths: np.ndarray, image_paths: np.ndarray) -> list[np.ndarray] | None:
    """Ground truth at original size; None when the dataset has no masks at all."""
    from uadflows.data import image_size, read_mask

    if not any(mask_paths):
        return None
    out = []
    for m, img in zip(mask_paths, image_paths):
        out.append(read_mask(m) if m else np.zeros(image_size(img), dtype=bool))
    return out


def evaluate(spec_json: str | Path, summary_json: str | Path, scores_npz: str | Path,
             out_json: str | Path) -> dict[str, Any]:
    """Torch-free: the job spec, train's weight-free summary and the scores."""
    from uadflows import metrics as M

    spec, summary = JobSpec.load(spec_json), read_json(summary_json)
    key = {k: getattr(spec, k) for k in ("sweep", "dataset", "category", "model", "method", "backbone", "seed")}
    ev = {"resolution": spec.evaluation.resolution, "pro_limit": spec.evaluation.pro_limit}
    result: dict[str, Any] = {
        "key": key, "protocol": spec.protocol, "resolution": ev["resolution"],
        "pro_limit": ev["pro_limit"], "spec": spec.to_dict(),
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
    masks = _masks(d["masks"], d["images"])
    segmentations = list(d["log_nfa"] > 0) if "log_nfa" in d else None
    if masks is None:
        result["note"] = "no ground-truth masks: image-level metrics only"
    metrics = M.evaluate(labels, scores, maps, masks, resolution=ev["resolution"],
                         pro_limit=ev["pro_limit"], segmentations=segmentations)
    pro_key = str(d.get("pro_map", "maps"))
    if masks is not None and pro_key != "maps":  # the paper's PRO is on another map
        pro_maps = list(d[pro_key])
        if ev["resolution"] == "original":
            pro_maps, pro_masks = M.to_mask_resolution(pro_maps, masks), masks
        else:
            pro_masks = M.to_map_resolution(pro_maps, masks)
        metrics["au_pro"] = M.au_pro(pro_maps, pro_masks, limit=ev["pro_limit"])
        result["pro_map"] = pro_key
    for k in [k for k in d if k.startswith("score_") and d[k].ndim == 1]:
        extra = M.image_metrics(labels, d[k].astype(np.float64))
        metrics.update({f"{m}_{k[len('score_'):]}": v for m, v in extra.items()})
    metrics.pop("resolution", None)
    metrics.pop("pro_limit", None)

    curves = {"roc": [a.tolist() for a in M.roc_points(labels, scores, max_points=500)]}
    if masks is not None:
        # the plotted curve only: at map resolution, which is cheap (the metric is exact above)
        fpr, pro = M.pro_curve(maps, M.to_map_resolution(maps, masks), limit=ev["pro_limit"])
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
    )
    write_json(out_json, result)
    return result

