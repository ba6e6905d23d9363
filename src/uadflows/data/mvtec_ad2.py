"""MVTec AD 2 (Heckler-Kram et al. 2025, arXiv 2503.21622) as its authors distribute it.

    {root}/{object}/train/good/*.png
    {root}/{object}/validation/good/*.png           normal; for thresholds, never training
    {root}/{object}/test_public/good/*.png
    {root}/{object}/test_public/bad/*.png
    {root}/{object}/test_public/ground_truth/bad/{stem}_mask.png
    {root}/{object}/test_private/{NNN}_regular.png       no labels: scored by the authors'
    {root}/{object}/test_private_mixed/{NNN}_mixed.png   evaluation server

(The authors' MVTecAD2_public_code_utils, mvtec_ad_2_public_offline.py and utils.py, read
and check the same tree.) The index holds train, validation and test_public (split
``test``); the private sets are listed by ``private_images`` for the export.
"""

from __future__ import annotations

from pathlib import Path

from uadflows.data.base import DatasetError, Sample
from uadflows.data.tree import GOOD, find_mask, list_images

AD2_OBJECTS = ("can", "fabric", "fruit_jelly", "rice", "sheet_metal", "vial", "wallplugs",
               "walnuts")
PRIVATE_SPLITS = {"test_private": "regular", "test_private_mixed": "mixed"}  # name suffixes
DEFECT = "bad"


def _images(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: {what} folder not found")
    images = list_images(folder)
    if not images:
        raise DatasetError(f"{folder}: empty split, no images ({what})")
    return images


def _only(folder: Path, allowed: set[str]) -> None:
    """No folder besides the distributed ones: a stray one would be silently ignored."""
    extra = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in allowed
                   and not p.name.startswith("."))
    if extra:
        raise DatasetError(f"{folder}: unexpected folder(s) {', '.join(extra)}/ (MVTec AD 2 "
                           f"has {', '.join(sorted(allowed))}/ here)")


def index_mvtec_ad2(root: Path, category: str) -> list[Sample]:
    """train, validation and test_public samples of one object (unsorted, not decoded)."""
    obj = root / category
    if not obj.is_dir():
        raise DatasetError(f"{obj}: object '{category}' not found under root {root}")
    samples = [Sample(p, "train", 0, GOOD) for p in _images(obj / "train" / GOOD, "train good")]
    _only(obj / "train", {GOOD})
    samples += [Sample(p, "validation", 0, GOOD)
                for p in _images(obj / "validation" / GOOD, "validation good")]
    test = obj / "test_public"
    samples += [Sample(p, "test", 0, GOOD) for p in _images(test / GOOD, "test_public good")]
    _only(test, {GOOD, DEFECT, "ground_truth"})
    gt_folder = test / "ground_truth" / DEFECT
    if not gt_folder.is_dir():
        raise DatasetError(f"{gt_folder}: ground_truth folder not found (test_public has masks)")
    by_stem: dict[str, list[Path]] = {}
    for mask in list_images(gt_folder):
        by_stem.setdefault(mask.stem, []).append(mask)
    for image in _images(test / DEFECT, "test_public bad"):
        samples.append(Sample(image, "test", 1, DEFECT, find_mask(image, gt_folder, by_stem)))
    return samples


def private_images(root: Path, category: str, split: str) -> list[Path]:
    """The unlabelled images of test_private or test_private_mixed, sorted by name; each
    named ``{NNN}_regular.png`` / ``{NNN}_mixed.png`` as the evaluation server expects."""
    if split not in PRIVATE_SPLITS:
        raise DatasetError(f"private split '{split}' is not one of {', '.join(PRIVATE_SPLITS)}")
    folder = root / category / split
    images = _images(folder, f"{split} (unlabelled)")
    suffix = PRIVATE_SPLITS[split]
    expected = {f"{i:03d}_{suffix}.png" for i in range(len(images))}
    found = {p.name for p in images}
    if found != expected:
        missing, extra = sorted(expected - found), sorted(found - expected)
        raise DatasetError(f"{folder / extra[0]}: unexpected name, {missing[0]} is missing (the "
                           f"evaluation server needs 000_{suffix}.png .. "
                           f"{len(images) - 1:03d}_{suffix}.png)")
    return images
