"""All runs' ``metrics.json`` -> ``results/metrics.csv`` (one row per run, failed ones too).

Each metric m comes with ``m_low`` and ``m_high``: the bounds of its bootstrap interval over
the test images (level and resamples in the ``ci_level`` and ``ci_resamples`` columns).
``image_f1_max`` and ``pixel_f1_max`` are oracles (the threshold chosen on the test set);
the ``*_at_val_threshold`` metrics are at thresholds chosen on the normal validation images,
whose values are the ``val_image_threshold`` and ``val_pixel_threshold`` columns
(docs/statistics.md); they are empty for a run without validation images.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from uadflows.io import atomic_path
from uadflows.metrics.thresholds import THRESHOLDED

KEY = ["sweep", "dataset", "category", "model", "method", "backbone", "seed"]
METRICS = ["image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap",
           "pixel_f1_max", "au_pro", "miou", *THRESHOLDED]
COST = ["flow_params", "train_seconds", "infer_images_per_s", "peak_rss_mb", "peak_gpu_mb"]


def aggregate(metrics_files: list[str | Path], out_csv: str | Path) -> pd.DataFrame:
    rows = []
    for f in metrics_files:
        f = Path(f)
        try:
            m = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RuntimeError(f"{f}: unreadable metrics file ({e}); delete it and rerun") from None
        row = {**m["key"], "status": m["status"], "resolution": m.get("resolution"),
               "protocol": m.get("protocol"), "pro_limit": m.get("pro_limit"),
               "weights": m.get("weights", "")}
        values = m.get("metrics", {})
        row.update({k: values.get(k, float("nan")) for k in METRICS})
        row.update({k: v for k, v in values.items() if k not in METRICS})  # extras, e.g. *_max
        st = m.get("statistics") or {}
        bounds = st.get("intervals", {})
        for k in METRICS:
            row[f"{k}_low"], row[f"{k}_high"] = bounds.get(k, (float("nan"), float("nan")))
        row["ci_level"], row["ci_resamples"] = st.get("level"), st.get("resamples")
        thresholds = m.get("thresholds") or {}
        for part in ("image", "pixel"):
            row[f"val_{part}_threshold"] = (thresholds.get(part) or {}).get("value", float("nan"))
        row["n_validation"] = (thresholds.get("validation") or {}).get("n", 0)
        row.update({k: (m.get("cost") or {}).get(k) for k in COST})
        row["run_dir"] = str(f.parent)
        row["error"] = m.get("error", "")
        health = m.get("health") or {}
        row["health"], row["health_message"] = health.get("health", ""), health.get("message", "")
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(KEY).reset_index(drop=True)
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    return df
