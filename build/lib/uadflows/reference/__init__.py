"""Published numbers of the methods this benchmark reproduces.

``published.csv`` holds one row per number a paper or a main reproduction reports:
method, backbone, dataset, category ("mean" for an average), metric (our names), value (in
percent, as published), protocol (how the epoch was chosen: last-epoch, best-epoch on the
test set, early-stopping, or not-stated), image_size (input side in px, empty when it
varies) and source (paper table, or repository and file). docs/report.md says how the rows
were gathered.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

COLUMNS = ["method", "backbone", "dataset", "category", "metric", "value", "protocol",
           "image_size", "source"]
METHODS = {"fastflow", "msflow", "uflow", "cflow", "csflow"}
METRICS = {"image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap",
           "pixel_f1_max", "au_pro", "miou"}
PROTOCOLS = {"last-epoch", "best-epoch", "early-stopping", "not-stated"}
CATEGORIES = {
    "mvtec": {"bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather",
              "metal_nut", "pill", "screw", "tile", "toothbrush", "transistor", "wood",
              "zipper"},
    "btad": {"01", "02", "03"},
    "visa": {"candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2",
             "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum"},
}
_KEY = ["method", "backbone", "dataset", "category", "metric", "protocol", "image_size", "source"]


def published() -> pd.DataFrame:
    """The reference numbers shipped with the package, checked."""
    with resources.as_file(resources.files(__name__) / "published.csv") as path:
        return load_published_csv(path)


def load_published_csv(path: str | Path) -> pd.DataFrame:
    """Read a csv in the published.csv format and check every row; errors name the row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: published numbers file not found")
    # categories such as BTAD's "01" must stay strings
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    table = table[COLUMNS].copy()
    for i, row in table.iterrows():
        where = f"{path}: row {i + 2}"
        for column in COLUMNS:
            if column != "image_size" and not row[column].strip():
                raise ValueError(f"{where}: empty {column!r}")
        if row["method"] not in METHODS:
            raise ValueError(f"{where}: unknown method {row['method']!r}; known {sorted(METHODS)}")
        if row["dataset"] not in CATEGORIES:
            raise ValueError(f"{where}: unknown dataset {row['dataset']!r}; "
                             f"known {sorted(CATEGORIES)}")
        if row["category"] != "mean" and row["category"] not in CATEGORIES[row["dataset"]]:
            raise ValueError(f"{where}: {row['category']!r} is not a {row['dataset']} category")
        if row["metric"] not in METRICS:
            raise ValueError(f"{where}: unknown metric {row['metric']!r}; known {sorted(METRICS)}")
        if row["protocol"] not in PROTOCOLS:
            raise ValueError(f"{where}: unknown protocol {row['protocol']!r}; "
                             f"known {sorted(PROTOCOLS)}")
        try:
            value = float(row["value"])
        except ValueError:
            raise ValueError(f"{where}: value {row['value']!r} is not a number") from None
        if not 0 < value <= 100:
            raise ValueError(f"{where}: value {value} outside (0, 100]; values are percent")
        if row["image_size"] and not row["image_size"].isdigit():
            raise ValueError(f"{where}: image_size {row['image_size']!r} is not a whole number")
    duplicated = table.duplicated(subset=_KEY)
    if duplicated.any():
        first = int(duplicated.to_numpy().nonzero()[0][0])
        raise ValueError(f"{path}: row {first + 2} repeats an earlier row")
    table["value"] = table["value"].astype(float)
    return table


__all__ = ["published", "load_published_csv", "COLUMNS"]
