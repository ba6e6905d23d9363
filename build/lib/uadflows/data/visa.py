"""VisA: the authors' tree with the one-class split in ``split_csv/1cls.csv``, or the
MVTec-style tree their ``prepare_data.py`` writes (``test/bad``, ``ground_truth/bad``)."""

from __future__ import annotations

import csv
from pathlib import Path

from uadflows.data.base import DatasetError, Sample
from uadflows.data.tree import GOOD, index_tree

SPLIT_CSV = Path("split_csv") / "1cls.csv"
CSV_COLUMNS = ("object", "split", "label", "image", "mask")
DEFECT = "bad"  # the name prepare_data.py gives the anomalies; used for both layouts
_LABELS = {"normal": 0, "anomaly": 1}


def index_visa(root: Path, category: str) -> list[Sample]:
    """Samples of one VisA category from whichever layout ``root`` holds (csv preferred)."""
    csv_path = root / SPLIT_CSV
    if csv_path.is_file():
        return index_visa_csv(root, csv_path, category)
    if (root / category / "train").is_dir():
        return index_tree(root, category)
    raise DatasetError(f"{root}: not a VisA root: neither the split file {csv_path} (VisA as "
                       f"distributed) nor the prepared tree {root / category}/train/ was found")


def _row_path(root: Path, value: str, csv_path: Path, line: int, what: str) -> Path:
    path = root / value.strip()
    if not path.is_file():
        raise DatasetError(f"{csv_path}, line {line}: {what} {path} does not exist")
    return path


def index_visa_csv(root: Path, csv_path: Path, category: str) -> list[Sample]:
    """Rows of ``category`` in the one-class split csv; paths are relative to ``root``."""
    samples: list[Sample] = []
    seen: set[Path] = set()
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{csv_path}: missing column(s) {', '.join(missing)}; expected "
                               f"header {','.join(CSV_COLUMNS)}")
        for row in reader:
            if (row["object"] or "").strip() != category:
                continue
            line = reader.line_num
            split, label_name = (row["split"] or "").strip(), (row["label"] or "").strip()
            if split not in ("train", "test"):
                raise DatasetError(f"{csv_path}, line {line}: split '{split}' is not train or test")
            if label_name not in _LABELS:
                raise DatasetError(f"{csv_path}, line {line}: label '{label_name}' is not "
                                   "normal or anomaly")
            label = _LABELS[label_name]
            if split == "train" and label:
                raise DatasetError(f"{csv_path}, line {line}: anomalous image in the train "
                                   "split (one-class training needs normal images only)")
            image = _row_path(root, row["image"] or "", csv_path, line, "image")
            if image in seen:
                raise DatasetError(f"{csv_path}, line {line}: image {image} is listed twice")
            seen.add(image)
            mask_value = (row["mask"] or "").strip()
            if label and not mask_value:
                raise DatasetError(f"{csv_path}, line {line}: anomalous image {image} has no mask")
            if not label and mask_value:
                raise DatasetError(f"{csv_path}, line {line}: normal image {image} has a mask")
            mask = _row_path(root, mask_value, csv_path, line, "mask") if label else None
            samples.append(Sample(image, split, label, DEFECT if label else GOOD, mask))
    if not samples:
        raise DatasetError(f"{csv_path}: no rows for category '{category}'")
    for split, label, what in (("train", 0, "train normal"), ("test", 0, "test normal"),
                               ("test", 1, "test anomaly")):
        if not any(s.split == split and s.label == label for s in samples):
            raise DatasetError(f"{csv_path}: empty split, no {what} rows for '{category}'")
    return samples
