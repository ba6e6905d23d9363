"""Index one category laid out as an MVTec AD tree (also BTAD, VisA's prepared tree, folder).

    {root}/{category}/train/{good}/*                  normal training images
    {root}/{category}/test/{good}/*                   normal test images
    {root}/{category}/test/{defect_type}/*            defective test images
    {root}/{category}/ground_truth/{defect_type}/{stem}_mask.* or {stem}.*

A mask is matched to its image by file stem whatever the extension (BTAD mixes .bmp and
.png; VisA's prepared tree drops the ``_mask`` suffix).
"""

from __future__ import annotations

from pathlib import Path

from uadflows.data.base import DatasetError, Sample
from uadflows.data.images import IMAGE_SUFFIXES, is_image_file

GOOD = "good"  # the defect name every layout's normal images get in a Sample


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; hidden and non-image files skipped."""
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=lambda p: p.name)


def _subfolders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def _require_images(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: {what} folder not found")
    images = list_images(folder)
    if not images:
        raise DatasetError(f"{folder}: empty split, no images ({what}; looked for "
                           f"{', '.join(IMAGE_SUFFIXES)})")
    return images


def _loose_images(folder: Path) -> None:
    loose = list_images(folder)
    if loose:
        raise DatasetError(f"{loose[0]}: image outside a class folder; images go in "
                           f"{folder}/<good or defect type>/")


def _masks_by_stem(folder: Path) -> dict[str, list[Path]]:
    by_stem: dict[str, list[Path]] = {}
    if folder.is_dir():
        for path in list_images(folder):
            by_stem.setdefault(path.stem, []).append(path)
    return by_stem


def find_mask(image: Path, gt_folder: Path, by_stem: dict[str, list[Path]]) -> Path:
    candidates = by_stem.get(f"{image.stem}_mask", []) + by_stem.get(image.stem, [])
    if not candidates:
        raise DatasetError(f"{image}: defective test image has no mask (looked for "
                           f"{gt_folder}/{image.stem}_mask.* and {image.stem}.*)")
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise DatasetError(f"{image}: several masks match its stem in {gt_folder}: {names}")
    return candidates[0]


def index_tree(root: Path, category: str, *, good: str = GOOD, masks_required: bool = True) -> list[Sample]:
    """Samples of one category (unsorted, files not yet decoded).

    good: name of the normal-image folder ("good"; BTAD: "ok").
    masks_required: False for a user's folder dataset, where ``ground_truth/`` may be
        absent (image-level metrics only). If it is present, every defective image needs
        a mask: a partial ground truth would silently bias pixel metrics.
    """
    cat_dir = root / category
    if not cat_dir.is_dir():
        raise DatasetError(f"{cat_dir}: category '{category}' not found under root {root}")
    train_dir, test_dir, gt_dir = cat_dir / "train", cat_dir / "test", cat_dir / "ground_truth"

    samples = [Sample(p, "train", 0, GOOD) for p in _require_images(train_dir / good, "train normal")]
    _loose_images(train_dir)
    others = [p.name for p in _subfolders(train_dir) if p.name != good]
    if others:
        raise DatasetError(f"{train_dir}: only '{good}/' may be in train (one-class training), "
                           f"found {', '.join(others)}/")

    samples += [Sample(p, "test", 0, GOOD) for p in _require_images(test_dir / good, "test normal")]
    _loose_images(test_dir)
    defect_dirs = [p for p in _subfolders(test_dir) if p.name != good]
    if not defect_dirs:
        raise DatasetError(f"{test_dir}: no defect-type folder besides '{good}/' (test needs "
                           "defective images)")
    with_masks = masks_required or gt_dir.is_dir()
    if masks_required and not gt_dir.is_dir():
        raise DatasetError(f"{gt_dir}: ground_truth folder not found (masks are required "
                           "for this dataset)")
    for defect_dir in defect_dirs:
        defect = defect_dir.name
        if defect == GOOD:  # only reachable when normal images are named otherwise (BTAD "ok")
            raise DatasetError(f"{defect_dir}: '{GOOD}' is not a defect type here; normal "
                               f"test images go in {test_dir / good}")
        images = _require_images(defect_dir, f"test defect '{defect}'")
        gt_folder = gt_dir / defect
        by_stem = _masks_by_stem(gt_folder)
        for image in images:
            mask = find_mask(image, gt_folder, by_stem) if with_masks else None
            samples.append(Sample(image, "test", 1, defect, mask))
    return samples
