"""Read what the pipeline wrote: ``results/metrics.csv`` and the run folders it points to.

Shared by the tables, the figures and the MLflow logger, so that all three read (and
reject) the same inputs the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from uadflows import io
from uadflows.spec import run_key as spec_run_key

KEY_COLUMNS = ["dataset", "category", "model", "method", "backbone", "seed"]
REQUIRED_COLUMNS = [*KEY_COLUMNS, "status"]
METRICS = [
    "image_auroc",
    "image_ap",
    "image_f1_max",
    "pixel_auroc",
    "pixel_ap",
    "pixel_f1_max",
    "au_pro",
    "miou",
    # at the thresholds chosen on the normal validation images (F1-max above: the oracle's)
    "image_f1_at_val_threshold",
    "pixel_f1_at_val_threshold",
    "seg_iou_at_val_threshold",
    # dataset protocols (docs/datasets.md): MVTec AD 2, Real-IAD's sample level
    "au_pro_0.05",
    "au_pro_0.3",
    "seg_f1",
    "sample_auroc",
]
COST_COLUMNS = ["flow_params", "train_seconds", "infer_images_per_s", "peak_rss_mb", "peak_gpu_mb"]
STATUSES = {"ok", "failed"}
# Columns whose absence only means "not recorded": filled with these defaults.
DEFAULTS = {
    "sweep": "",
    "resolution": "original",
    "protocol": "last-epoch",
    "pro_limit": 0.3,
    "run_dir": "",
    "error": "",
    "health": "",  # the training health verdict (uadflows.health): ok, collapsing, shrunk
    "health_message": "",
}


class ReportError(ValueError):
    """Bad input to the report or the tracker; the message names the file and the fault."""


def load_metrics(metrics_csv: str | Path) -> pd.DataFrame:
    """Read and check ``metrics.csv``: one row per run, metrics in [0, 1] or NaN."""
    path = Path(metrics_csv)
    if not path.is_file():
        raise ReportError(f"{path}: metrics file not found (run `uadflows aggregate` first)")
    try:
        df = pd.read_csv(path, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ReportError(f"{path}: not a readable CSV ({err})") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ReportError(f"{path}: missing column(s) {', '.join(missing)}")
    if df.empty:
        raise ReportError(f"{path}: no runs listed")
    for column, default in DEFAULTS.items():
        if column not in df.columns:
            df[column] = default
        if isinstance(default, str):  # an all-empty column is read as float NaN
            df[column] = df[column].astype(object)
        df[column] = df[column].fillna(default)
    for column in METRICS + COST_COLUMNS:
        if column not in df.columns:
            df[column] = np.nan
        df[column] = pd.to_numeric(df[column], errors="coerce")
    for column in ["dataset", "category", "model", "method", "backbone", "status", "sweep",
                   "resolution", "protocol", "run_dir", "error", "health", "health_message"]:
        df[column] = df[column].astype(str)
    try:
        df["seed"] = df["seed"].astype(int)
    except (TypeError, ValueError) as err:
        raise ReportError(f"{path}: column 'seed' must hold integers ({err})") from err
    bad_status = sorted(set(df["status"]) - STATUSES)
    if bad_status:
        raise ReportError(f"{path}: unknown status {bad_status}; "
                          f"expected one of {sorted(STATUSES)}")
    for column in METRICS:
        values = df[column]
        bad = values.notna() & ((values < -1e-9) | (values > 1 + 1e-9))  # float round-off
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ReportError(
                f"{path}: column {column!r} row {row + 2} holds {values.iloc[row]!r}; "
                "metrics must be fractions in [0, 1]"
            )
    duplicated = df.duplicated(subset=["sweep", *KEY_COLUMNS, "resolution", "protocol"])
    if duplicated.any():
        row = df[duplicated].iloc[0]
        raise ReportError(
            f"{path}: run listed twice: {row['dataset']}/{row['category']}/{row['model']}/"
            f"seed{row['seed']}"
        )
    df.attrs["source"] = str(path)
    return df


def run_dir(row: pd.Series, metrics_csv: str | Path) -> Path:
    """Folder of one run. ``run_dir`` may be absolute, relative to the working directory or
    relative to the results folder; without it the documented layout is assumed."""
    csv_dir = Path(metrics_csv).resolve().parent
    given = str(row.get("run_dir", "") or "")
    if given and given != "nan":
        candidates = [Path(given), csv_dir / given, csv_dir.parent / given]
    else:
        candidates = [
            csv_dir / "runs" / row["dataset"] / row["category"] / row["model"]
            / f"seed{row['seed']}"
        ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise ReportError(f"{metrics_csv}: run folder of {run_key(row)} not found (tried {tried})")


def run_key(row: pd.Series) -> str:
    """The run's identity inside a sweep: dataset/category/model/seed<N>."""
    return spec_run_key(row["dataset"], row["category"], row["model"], int(row["seed"]))


def read_json(path: Path) -> dict:
    """``io.read_json``, its errors as ReportError; the file must hold an object."""
    try:
        data = io.read_json(path)
    except (FileNotFoundError, ValueError) as err:
        raise ReportError(str(err)) from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_history(path: Path) -> pd.DataFrame | None:
    """``history.csv`` (epoch, loss, ...) or None when the run has none."""
    if not path.is_file():
        return None
    try:
        history = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ReportError(f"{path}: not a readable CSV ({err})") from err
    for column in ("epoch", "loss"):
        if column not in history.columns:
            raise ReportError(f"{path}: missing column {column!r}")
    return history


def read_scores(path: Path) -> dict[str, np.ndarray]:
    """``scores.npz``: image_scores, labels, maps (N, h, w), images, masks (paths)."""
    if not path.is_file():
        raise ReportError(f"{path}: file not found")
    with np.load(path, allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    for key in ("image_scores", "labels", "maps", "images"):
        if key not in data:
            raise ReportError(f"{path}: missing array {key!r}")
    n = len(data["labels"])
    if data["maps"].ndim != 3 or len(data["maps"]) != n or len(data["images"]) != n:
        raise ReportError(
            f"{path}: maps {data['maps'].shape} / images {data['images'].shape} do not match "
            f"{n} labels"
        )
    data.setdefault("masks", np.array([""] * n))
    return data
