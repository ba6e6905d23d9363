"""The contract of a dataset index (owned by uadflows.data)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


DEMO_N_TRAIN = 40  # the demo data's training images per category (make_demo's default)


class DatasetError(ValueError):
    """Bad input in a dataset; the message names the file (or folder) and the fault."""


@dataclass(frozen=True)
class Sample:
    """One image of a category.

    split: "train", "validation" (normal images kept apart for thresholds, MVTec AD 2)
        or "test". label: 0 normal, 1 anomalous.
    defect: "good" for normal images, else the defect type (folder name).
    mask: path of the ground-truth mask, None for normal images (and for defective
        images of a folder dataset without ground truth).
    """

    image: Path
    split: str
    label: int
    defect: str
    mask: Path | None = None
