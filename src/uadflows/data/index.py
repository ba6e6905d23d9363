"""Choosing categories, indexing and validating one category, and the index csv."""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from uadflows.data.base import DatasetError, Sample
from uadflows.data.images import check_images
from uadflows.data.ksdd2 import KSDD2_CATEGORY, index_ksdd2
from uadflows.data.mvtec_ad2 import AD2_OBJECTS, index_mvtec_ad2
from uadflows.data.realiad import REALIAD_OBJECTS, index_realiad
from uadflows.data.tree import GOOD, index_tree
from uadflows.data.visa import index_visa

FORMATS = ("mvtec", "btad", "visa", "folder", "demo", "mpdd", "ksdd2", "realiad", "mvtec_ad2")
SPLITS = ("train", "validation", "test")  # validation: MVTec AD 2's normal images for thresholds

OFFICIAL_CATEGORIES: dict[str, tuple[str, ...]] = {
    "mvtec": ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
              "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper"),
    "btad": ("01", "02", "03"),
    "visa": ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2",
             "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum"),
    "demo": ("brick", "grass", "gravel"),
    # MPDD (Jezek et al. 2021): the 6 metal-part categories, in the MVTec layout
    "mpdd": ("bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate",
             "tubes"),
    "ksdd2": (KSDD2_CATEGORY,),  # one surface; the dataset root holds train/ and test/
    "realiad": REALIAD_OBJECTS,
    "mvtec_ad2": AD2_OBJECTS,
}

INDEX_COLUMNS = ("image", "split", "label", "defect", "mask")
_MAX_LISTED_FAULTS = 10


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format '{fmt}'; expected one of {', '.join(FORMATS)}")


def _check_root(root: Path) -> None:
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root not found (or not a folder)")


def _check_official(fmt: str, root: Path, category: str) -> None:
    official = OFFICIAL_CATEGORIES.get(fmt)
    if official is not None and category not in official:
        raise DatasetError(f"unknown {fmt} category '{category}' (root {root}); the official "
                           f"categories are {', '.join(official)}; use format 'folder' for "
                           "other data in the MVTec layout")


def resolve_categories(fmt: str, root: str | os.PathLike, selection: str | Sequence[str]) -> list[str]:
    """Category names for a config entry: "all" is the official list (folder: every
    sub-folder of root); a list (or one name) is checked against it."""
    _check_format(fmt)
    root = Path(root)
    _check_root(root)
    if fmt == "folder":
        present = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if selection == "all":
            if not present:
                raise DatasetError(f"{root}: no category folders in this folder dataset root")
            if {"train", "test"} & set(present):
                raise DatasetError(f"{root}: looks like one category (it holds train/ or test/); "
                                   f"give its parent {root.parent} as root and '{root.name}' as "
                                   "category")
            return present
    elif selection == "all":
        return list(OFFICIAL_CATEGORIES[fmt])
    names = [selection] if isinstance(selection, str) else list(selection)
    if not names:
        raise DatasetError(f"{root}: empty category selection (give 'all' or names)")
    for name in names:
        if not isinstance(name, str) or not name:
            raise DatasetError(f"{root}: category names must be non-empty strings, got {name!r}")
        if fmt == "folder":
            if name not in present:
                raise DatasetError(f"unknown folder category '{name}': no folder {root / name} "
                                   f"(root {root} holds: {', '.join(present) or 'nothing'})")
        else:
            _check_official(fmt, root, name)
    if len(set(names)) != len(names):
        raise DatasetError(f"{root}: category selection lists a name twice: {names}")
    return names


def _raw_samples(fmt: str, root: Path, category: str) -> list[Sample]:
    if fmt == "visa":
        return index_visa(root, category)
    if fmt == "btad":
        return index_tree(root, category, good="ok")
    if fmt == "ksdd2":
        return index_ksdd2(root, category)
    if fmt == "realiad":
        return index_realiad(root, category)
    if fmt == "mvtec_ad2":
        return index_mvtec_ad2(root, category)
    return index_tree(root, category, masks_required=fmt != "folder")


def sort_key(sample: Sample) -> tuple:
    """train, validation, test; normal before defective, then defect type and file path."""
    return (SPLITS.index(sample.split), sample.label, sample.defect, str(sample.image))


def validate_samples(samples: Sequence[Sample], decode: bool = True) -> None:
    """Every image and mask readable (fully decoded unless ``decode`` is False) and every
    mask the size of its image; raises one DatasetError listing the faults found."""
    images = [s.image for s in samples]
    masked = [s for s in samples if s.mask is not None]
    sizes = check_images(images + [s.mask for s in masked], decode=decode)
    faults = [str(r) for r in sizes if isinstance(r, DatasetError)]
    image_sizes = dict(zip(images, sizes[: len(images)]))
    for sample, mask_size in zip(masked, sizes[len(images):]):
        size = image_sizes[sample.image]
        if isinstance(size, DatasetError) or isinstance(mask_size, DatasetError):
            continue
        if mask_size != size:
            faults.append(f"{sample.mask}: mask is {mask_size[0]}x{mask_size[1]} (HxW) but its "
                          f"image {sample.image} is {size[0]}x{size[1]}")
    if faults:
        more = len(faults) - _MAX_LISTED_FAULTS
        listed = "\n  ".join(faults[:_MAX_LISTED_FAULTS])
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise DatasetError(f"{len(faults)} bad file(s):\n  {listed}{tail}")


def index_category(fmt: str, root: str | os.PathLike, category: str, *, decode: bool = True) -> list[Sample]:
    """All train and test samples of a category, sorted by ``sort_key`` and validated.

    decode=False checks headers only (sizes, formats) and skips the full decode that finds
    truncated files; the default decodes everything (threaded).
    """
    _check_format(fmt)
    root = Path(root)
    _check_root(root)
    _check_official(fmt, root, category)
    samples = sorted(_raw_samples(fmt, root, category), key=sort_key)
    validate_samples(samples, decode=decode)
    return samples


def write_index(samples: Iterable[Sample], csv_path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Write the index csv atomically (temp file, then os.replace). With ``root``, paths are
    written relative to it (POSIX style) so the index moves with the dataset."""
    csv_path = Path(csv_path)
    base = Path(root) if root is not None else None

    def rel(path: Path | None) -> str:
        if path is None:
            return ""
        if base is None:
            return Path(path).as_posix()
        try:
            return Path(path).relative_to(base).as_posix()
        except ValueError:
            raise DatasetError(f"{path}: not under the index root {base}") from None

    csv_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=csv_path.parent, prefix=f".{csv_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(INDEX_COLUMNS)
            for s in samples:
                writer.writerow([rel(s.image), s.split, s.label, s.defect, rel(s.mask)])
        os.replace(tmp, csv_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return csv_path


def read_index(csv_path: str | os.PathLike, root: str | os.PathLike | None = None) -> list[Sample]:
    """Samples from an index csv; relative paths are joined to ``root`` when given.
    Every row is checked, and every file it names must exist."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path}: index file not found")
    base = Path(root) if root is not None else None
    samples: list[Sample] = []
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != INDEX_COLUMNS:
            raise DatasetError(f"{csv_path}: header is {reader.fieldnames}, expected "
                               f"{','.join(INDEX_COLUMNS)}")
        for row in reader:
            where = f"{csv_path}, line {reader.line_num}"
            if None in row or any(row[c] is None for c in INDEX_COLUMNS):
                raise DatasetError(f"{where}: expected {len(INDEX_COLUMNS)} fields")
            split, label_text, defect = row["split"], row["label"], row["defect"]
            if split not in SPLITS:
                raise DatasetError(f"{where}: split '{split}' is not one of {', '.join(SPLITS)}")
            if label_text not in ("0", "1"):
                raise DatasetError(f"{where}: label '{label_text}' is not 0 or 1")
            label = int(label_text)
            if not defect or (defect == GOOD) != (label == 0):
                raise DatasetError(f"{where}: defect '{defect}' contradicts label {label} "
                                   f"(normal images have defect '{GOOD}')")
            if split != "test" and label:
                raise DatasetError(f"{where}: defective image in the {split} split")
            paths = []
            for column in ("image", "mask"):
                value = row[column]
                if not value:
                    paths.append(None)
                    continue
                path = Path(value) if base is None or Path(value).is_absolute() else base / value
                if not path.is_file():
                    raise DatasetError(f"{where}: {column} {path} does not exist")
                paths.append(path)
            image, mask = paths
            if image is None:
                raise DatasetError(f"{where}: empty image path")
            if mask is not None and not label:
                raise DatasetError(f"{where}: normal image {image} has a mask")
            samples.append(Sample(image, split, label, defect, mask))
    if not samples:
        raise DatasetError(f"{csv_path}: index has no rows")
    return samples
