"""A tiny synthetic sweep in the pipeline's output formats, for tests and report previews.

Writes, under ``results_dir``: small PNG test images with masks, ``index/<dataset>/<cat>.csv``,
``runs/<dataset>/<cat>/<model>/seed<N>/`` (spec.json, history.csv, scores.npz, metrics.json,
records.npz/.csv with bootstrap intervals from uadflows.stats) and ``metrics.csv``. Maps are the mask blurred plus noise, so metrics are real (sklearn) but
the numbers mean nothing. A run listed in ``failed`` diverges: NaN loss, no scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from uadflows.stats import intervals, records_from_maps, save_records

MODELS = [("fastflow-r18", "fastflow", "resnet18"), ("msflow-wrn50", "msflow", "wide_resnet50_2")]


def write_synthetic_sweep(
    results_dir: str | Path,
    *,
    categories: dict[str, list[str]] | None = None,
    models: list[tuple[str, str, str]] | None = None,
    seeds: tuple[int, ...] = (0, 1),
    failed: tuple[tuple[str, str, str, int], ...] = (),
    size: int = 64,
    n_good: int = 3,
    n_defect: int = 3,
    epochs: int = 4,
    sweep: str = "synthetic",
) -> Path:
    """Write the sweep; returns the path of ``metrics.csv``."""
    root = Path(results_dir)
    categories = categories or {"mvtec": ["bottle", "metal_nut"]}
    models = models or MODELS
    rows = []
    for dataset, cats in categories.items():
        for c_index, category in enumerate(cats):
            samples = _write_images(root, dataset, category, size, n_good, n_defect, c_index)
            for m_index, (model, method, backbone) in enumerate(models):
                for seed in seeds:
                    rng = np.random.default_rng(1000 * c_index + 100 * m_index + seed)
                    is_failed = (dataset, category, model, seed) in failed
                    folder = root / "runs" / dataset / category / model / f"seed{seed}"
                    folder.mkdir(parents=True, exist_ok=True)
                    key = dict(sweep=sweep, dataset=dataset, category=category, model=model,
                               method=method, backbone=backbone, seed=seed)
                    _write_spec(folder, key, size, epochs)
                    _write_history(folder, rng, epochs, is_failed, scale=10.0 ** (m_index + 2))
                    if is_failed:
                        record = {"key": key, "status": "failed",
                                  "error": f"loss diverged (NaN) at epoch {epochs - 1}"}
                    else:
                        noise = 0.25 + 0.15 * m_index + 0.05 * seed
                        record = _write_scores(folder, samples, rng, noise, key)
                        record["health"] = _health(folder)
                    (folder / "metrics.json").write_text(json.dumps(record, indent=1))
                    rows.append(_csv_row(record, folder))
    table = pd.DataFrame(rows)
    table.to_csv(root / "metrics.csv", index=False)
    return root / "metrics.csv"


def _write_images(root, dataset, category, size, n_good, n_defect, c_index) -> list[dict]:
    rng = np.random.default_rng(c_index)
    base = root / "data" / dataset / category
    samples, index = [], []
    for label, count in ((0, n_good), (1, n_defect)):
        defect = "good" if label == 0 else "scratch"
        for k in range(count):
            image = rng.normal(0.5, 0.08, (size, size, 3)).clip(0, 1)
            mask = np.zeros((size, size), dtype=np.uint8)
            if label:
                y, x = rng.integers(4, size - size // 4, 2)
                side = int(rng.integers(size // 10, size // 4))
                mask[y:y + side, x:x + side] = 255
                image[mask > 0] = [0.9, 0.2, 0.1]
            image_path = base / "test" / defect / f"{k:03d}.png"
            image_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((image * 255).astype(np.uint8)).save(image_path)
            mask_path = ""
            if label:
                mask_path = base / "ground_truth" / defect / f"{k:03d}_mask.png"
                mask_path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(mask_path)
            samples.append({"image": str(image_path), "mask": str(mask_path), "label": label,
                            "truth": mask > 0})
            index.append({"image": str(image_path), "split": "test", "label": label,
                          "defect": defect, "mask": str(mask_path)})
    index_path = root / "index" / dataset / f"{category}.csv"
    index_path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(index).to_csv(index_path, index=False)
    return samples


def _write_spec(folder, key, size, epochs) -> None:
    spec = {**key,
            "format": "mvtec", "image_size": [size, size],
            "params": {"flow_steps": 2, "clamp": 2.0, "hidden_ratio": 1.0},
            "train": {"epochs": epochs, "batch_size": 4, "lr": 1e-3},
            "evaluation": {"resolution": "original", "pro_limit": 0.3},
            "protocol": "last-epoch"}
    (folder / "spec.json").write_text(json.dumps(spec, indent=1))


def _write_history(folder, rng, epochs, failed, scale) -> None:
    loss = -scale * (1 - np.exp(-np.arange(1, epochs + 1) / 2)) + rng.normal(0, scale / 50, epochs)
    if failed:
        loss[-1] = np.nan
    # the training health columns (uadflows.health) of one feature scale with a LayerNorm
    pd.DataFrame({"epoch": np.arange(epochs), "loss": loss, "lr": 1e-3,
                  "seconds": 0.5 + rng.random(epochs), "z2_scale0": 1 + rng.normal(0, 0.05, epochs),
                  "logdet_scale0": np.linspace(0, 0.5, epochs), "ln_scale0": np.linspace(1, 0.9, epochs),
                  }).to_csv(folder / "history.csv", index=False)


def _health(folder) -> dict:
    from uadflows.health import verdict

    return verdict(pd.read_csv(folder / "history.csv").to_dict("records"))


def _write_scores(folder, samples, rng, noise, key) -> dict:
    truths = np.stack([s["truth"] for s in samples])
    maps = np.stack([ndimage.gaussian_filter(t.astype(float), 2) for t in truths])
    maps = (maps + rng.normal(0, noise, maps.shape)).astype(np.float16)
    labels = np.array([s["label"] for s in samples])
    scores = maps.reshape(len(maps), -1).astype(float).max(axis=1)
    np.savez(folder / "scores.npz", image_scores=scores, labels=labels, maps=maps,
             images=np.array([s["image"] for s in samples]),
             masks=np.array([s["mask"] for s in samples]))
    flat, flat_truth = maps.astype(float).ravel(), truths.ravel()
    fpr, tpr, _ = roc_curve(labels, scores)  # image level, as the evaluator keeps it
    pro_fpr, pro = _pro_curve(maps.astype(float), truths)
    metrics = {"image_auroc": roc_auc_score(labels, scores),
               "image_ap": average_precision_score(labels, scores),
               "image_f1_max": _f1_max(labels, scores),
               "pixel_auroc": roc_auc_score(flat_truth, flat),
               "pixel_ap": average_precision_score(flat_truth, flat),
               "pixel_f1_max": _f1_max(flat_truth, flat),
               "au_pro": float(np.trapezoid(pro, pro_fpr) / 0.3)}
    records = records_from_maps(labels, scores, maps.astype(np.float32), truths, bins=2000,
                                images=[s["image"] for s in samples])
    save_records(records, folder / "records.npz", folder / "records.csv")
    bounds = intervals(records, resamples=200, seed=0)
    thin = np.linspace(0, len(fpr) - 1, min(len(fpr), 200)).astype(int)
    return {"statistics": {"resamples": 200, "seed": 0, "level": 0.95,
                           "intervals": {k: list(v) for k, v in bounds.items()}},
            "key": key, "status": "ok", "resolution": "original", "pro_limit": 0.3,
            "protocol": "last-epoch", "metrics": {k: float(v) for k, v in metrics.items()},
            "cost": {"flow_params": 1.2e6, "train_seconds": 3.5,
                     "epochs": 4, "infer_images_per_s": 40.0, "peak_rss_mb": 900.0,
                     "peak_gpu_mb": None},
            "curves": {"roc": [fpr[thin].tolist(), tpr[thin].tolist()],
                       "pro": [pro_fpr.tolist(), pro.tolist()]}}


def _f1_max(labels, scores) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(f1.max())


def _pro_curve(maps, truths, steps: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """A coarse PRO curve up to FPR 0.3 (synthetic data only; the real one is exact)."""
    regions = [(i, r) for i, t in enumerate(truths) for r in _regions(t)]
    normal = maps[~truths]
    fprs, pros = [0.0], [0.0]
    for t in np.quantile(normal, np.linspace(1, 0.7, steps)):
        fprs.append(float((normal >= t).mean()))
        overlaps = [(maps[i][r] >= t).mean() for i, r in regions]
        pros.append(float(np.mean(overlaps)) if overlaps else 0.0)
    return np.array(fprs), np.array(pros)


def _regions(truth):
    labelled, n = ndimage.label(truth, structure=np.ones((3, 3)))
    return [labelled == k for k in range(1, n + 1)]


def _csv_row(record: dict, folder: Path) -> dict:
    row = {**record["key"], "status": record["status"],
           "resolution": "original", "protocol": "last-epoch", "pro_limit": 0.3}
    for metric in ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap",
                   "pixel_f1_max", "au_pro", "miou"):
        row[metric] = record.get("metrics", {}).get(metric, np.nan)
        low, high = record.get("statistics", {}).get("intervals", {}).get(metric, (np.nan, np.nan))
        row[f"{metric}_low"], row[f"{metric}_high"] = low, high
    cost = record.get("cost", {})
    for column in ("flow_params", "train_seconds", "infer_images_per_s", "peak_rss_mb",
                   "peak_gpu_mb"):
        row[column] = cost.get(column, np.nan)
    row["run_dir"] = str(folder)
    row["error"] = record.get("error", "")
    health = record.get("health") or {}
    row["health"], row["health_message"] = health.get("health", ""), health.get("message", "")
    return row
