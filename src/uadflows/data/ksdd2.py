"""KolektorSDD2 (Božič, Tabernik, Skočaj 2021) as distributed: two flat folders.

    {root}/train/{id}.png     {root}/train/{id}_GT.png
    {root}/test/{id}.png      {root}/test/{id}_GT.png

Every image has a ``_GT`` mask, also the defect-free ones (all zeros): an image is
defective when its mask has a non-zero pixel. The official split is the two folders
(train 2085 normal + 246 defective, test 894 + 110). One-class training uses the normal
train images only; the defective train images are left out (as in the unsupervised
setting of SuperSimpleNet, blaz-r/SuperSimpleNet datamodules/ksdd2.py, which labels by
the same rule).
"""

from __future__ import annotations

from pathlib import Path

from uadflows.data.base import DatasetError, Sample
from uadflows.data.images import check_images, read_mask
from uadflows.data.tree import GOOD, list_images

KSDD2_CATEGORY = "ksdd2"  # the dataset is one surface; its root holds train/ and test/
DEFECT = "defect"
GT_SUFFIX = "_GT"


def _pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(image, mask) of every image in a split folder; every file must have its partner."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: KolektorSDD2 split folder not found")
    files = list_images(folder)
    masks = {p.stem[: -len(GT_SUFFIX)]: p for p in files if p.stem.endswith(GT_SUFFIX)}
    images = [p for p in files if not p.stem.endswith(GT_SUFFIX)]
    if not images:
        raise DatasetError(f"{folder}: empty split, no images (looked for {{id}}.png)")
    stems = {p.stem for p in images}
    orphans = sorted(set(masks) - stems)
    if orphans:
        raise DatasetError(f"{masks[orphans[0]]}: mask without its image "
                           f"{folder / orphans[0]}.png")
    pairs = []
    for image in images:
        if image.stem not in masks:
            raise DatasetError(f"{image}: image has no mask (looked for "
                               f"{folder / image.stem}{GT_SUFFIX}.png; KolektorSDD2 gives every "
                               "image one, all zeros when defect-free)")
        pairs.append((image, masks[image.stem]))
    return pairs


def _defective(masks: list[Path]) -> list[bool]:
    """Whether each mask has an anomalous pixel (masks decoded: the label depends on it)."""
    faults = [r for r in check_images(masks) if isinstance(r, DatasetError)]
    if faults:
        raise faults[0]
    return [bool(read_mask(m).any()) for m in masks]


def index_ksdd2(root: Path, category: str = KSDD2_CATEGORY) -> list[Sample]:
    """Normal train images, and every test image labelled by its mask (unsorted)."""
    samples: list[Sample] = []
    for split in ("train", "test"):
        pairs = _pairs(root / split)
        for (image, mask), bad in zip(pairs, _defective([m for _, m in pairs])):
            if split == "train" and bad:
                continue  # one-class training: the defective train images are not used
            samples.append(Sample(image, split, int(bad), DEFECT if bad else GOOD,
                                  mask if bad else None))
    for split, label, what in (("train", 0, "normal train"), ("test", 0, "normal test"),
                               ("test", 1, "defective test")):
        if not any(s.split == split and s.label == label for s in samples):
            raise DatasetError(f"{root / split}: empty split, no {what} images (an image is "
                               "defective when its _GT mask has a non-zero pixel)")
    return samples
