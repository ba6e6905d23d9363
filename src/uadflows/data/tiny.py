"""Tiny synthetic datasets in each real layout, for tests (ours and the workflow's).

The pixels are noise with a bright square on defective images; what matters is that the
tree, file names, extensions, image modes and mask values are exactly those the authors
distribute, including their odd cases: BTAD's mixed .bmp/.png, VisA's masks with values
other than 255 and its csv split, single-channel (grayscale) MVTec images, KolektorSDD2's
all-zero masks of normal images and its defective train images, Real-IAD's JSON split with
five views per sample (some views of a defective sample labelled OK), MVTec AD 2's
validation set and its unlabelled private test sets.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from uadflows.data.base import DatasetError

DEFAULT_CATEGORIES = {"mvtec": ("bottle",), "btad": ("01",), "visa": ("candle",),
                      "folder": ("widget",), "mpdd": ("metal_plate",), "ksdd2": ("ksdd2",),
                      "realiad": ("audiojack",), "mvtec_ad2": ("can",)}
REALIAD_VIEWS = 5


def save_image(path: Path, pixels: np.ndarray) -> Path:
    """Write an (H, W) or (H, W, 3) uint8 array; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _pair(rng: np.random.Generator, size: tuple[int, int], defective: bool, grayscale: bool,
          mask_value: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = size
    image = rng.integers(60, 140, (h, w) if grayscale else (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    if defective:
        top, left = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        mask[top:top + h // 3, left:left + w // 3] = mask_value
        image[mask > 0] = 250
    return image, mask


def make_tiny(fmt: str, root: str | os.PathLike, categories: tuple[str, ...] | None = None, *,
              size: tuple[int, int] = (24, 32), n_train: int = 3, n_test_good: int = 2,
              n_test_defect: int = 2, seed: int = 0, grayscale: bool = False,
              ground_truth: bool = True, visa_prepared: bool = False) -> Path:
    """Write a tiny dataset of format ``fmt`` (mvtec, btad, visa, folder) under ``root``.

    grayscale: single-channel images (as MVTec's grid, screw, zipper).
    ground_truth: folder format only; False writes no ``ground_truth/`` folder.
    visa_prepared: VisA as the MVTec-style tree of the authors' prepare_data.py instead of
        the distributed tree with ``split_csv/1cls.csv``.
    """
    if fmt not in DEFAULT_CATEGORIES:
        raise DatasetError(f"make_tiny: format '{fmt}' not one of {', '.join(DEFAULT_CATEGORIES)}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    counts = (n_train, n_test_good, n_test_defect)
    if fmt in ("ksdd2", "realiad", "mvtec_ad2"):
        write = {"ksdd2": _ksdd2, "realiad": _realiad, "mvtec_ad2": _mvtec_ad2}[fmt]
        for category in categories or DEFAULT_CATEGORIES[fmt]:
            write(root, category, rng, size, counts)
        return root
    csv_rows: list[list[str]] = []
    for category in categories or DEFAULT_CATEGORIES[fmt]:
        cat = root / category
        for i in range(n_train + n_test_good + n_test_defect):
            defective = i >= n_train + n_test_good
            split = "train" if i < n_train else "test"
            number = i - (n_train + n_test_good if defective else n_train if split == "test" else 0)
            mask_value = int(rng.integers(1, 4)) if fmt == "visa" else 255  # VisA: class ids
            image, mask = _pair(rng, size, defective, grayscale, mask_value)
            if fmt in ("mvtec", "folder", "mpdd"):
                folder = "good" if not defective else "crack" if fmt != "mpdd" else "hole"
                save_image(cat / split / folder / f"{number:03d}.png", image)
                if defective and (fmt != "folder" or ground_truth):
                    save_image(cat / "ground_truth" / folder / f"{number:03d}_mask.png", mask)
            elif fmt == "btad":
                # extensions alternate, and a mask's extension differs from its image's
                image_ext, mask_ext = (".bmp", ".png") if i % 2 else (".png", ".bmp")
                folder = "ko" if defective else "ok"
                save_image(cat / split / folder / f"{number:04d}{image_ext}", image)
                if defective:
                    save_image(cat / "ground_truth" / "ko" / f"{number:04d}{mask_ext}", mask)
            elif visa_prepared:
                folder = "bad" if defective else "good"
                save_image(cat / split / folder / f"{number:03d}.JPG", image)
                if defective:
                    save_image(cat / "ground_truth" / "bad" / f"{number:03d}.png", mask)
            else:
                kind = "Anomaly" if defective else "Normal"
                name = f"{number:03d}" if defective else f"{i:04d}"
                image_rel = f"{category}/Data/Images/{kind}/{name}.JPG"
                save_image(root / image_rel, image)
                mask_rel = ""
                if defective:
                    mask_rel = f"{category}/Data/Masks/Anomaly/{name}.png"
                    save_image(root / mask_rel, mask)
                csv_rows.append([category, split, "anomaly" if defective else "normal",
                                 image_rel, mask_rel])
    if csv_rows:
        split_csv = root / "split_csv" / "1cls.csv"
        split_csv.parent.mkdir(parents=True, exist_ok=True)
        with open(split_csv, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["object", "split", "label", "image", "mask"])
            writer.writerows(csv_rows)
    return root


def _ksdd2(root: Path, _category: str, rng: np.random.Generator, size: tuple[int, int],
           counts: tuple[int, int, int]) -> None:
    """Flat train/ and test/ folders; every image has an {id}_GT.png mask, all zeros when
    normal; the train folder also holds a defective image (left out of one-class training)."""
    n_train, n_good, n_defect = counts
    layout = [("train", False)] * n_train + [("train", True)] + \
        [("test", False)] * n_good + [("test", True)] * n_defect
    for i, (split, defective) in enumerate(layout):
        image, mask = _pair(rng, size, defective, False, 255)
        save_image(root / split / f"{10000 + i}.png", image)
        save_image(root / split / f"{10000 + i}_GT.png", mask)


def _realiad(root: Path, category: str, rng: np.random.Generator, size: tuple[int, int],
             counts: tuple[int, int, int]) -> None:
    """``root`` is the image folder (realiad_256, ...); the split JSON goes to
    ``root/../realiad_jsons/realiad_jsons/{category}.json``. Each count is a number of
    physical samples of five views; in a defective sample only views C1-C4 show the defect
    (C5 is labelled OK and has no mask, as views that miss the defect are)."""
    n_train, n_good, n_defect = counts
    items: dict[str, list[dict]] = {"train": [], "test": []}
    layout = [("train", False)] * n_train + [("test", False)] * n_good + [("test", True)] * n_defect
    for number, (split, defective) in enumerate(layout, start=1):
        folder = f"NG/HS/S{number:04d}" if defective else f"OK/S{number:04d}"
        for view in range(1, REALIAD_VIEWS + 1):
            shows = defective and view < REALIAD_VIEWS
            stem = f"{category}_{number:04d}_{'NG' if defective else 'OK'}_C{view}_2023102{view}"
            image, mask = _pair(rng, size, shows, False, 255)
            save_image(root / category / folder / f"{stem}.jpg", image)
            mask_path = None
            if shows:
                mask_path = f"{folder}/{stem}_mask.png"
                save_image(root / category / mask_path, mask)
            items[split].append({"category": category, "anomaly_class": "HS" if shows else "OK",
                                 "image_path": f"{folder}/{stem}.jpg", "mask_path": mask_path})
    split_file = root.parent / "realiad_jsons" / "realiad_jsons" / f"{category}.json"
    split_file.parent.mkdir(parents=True, exist_ok=True)
    meta = {"prefix": category, "normal_class": "OK"}
    split_file.write_text(json.dumps({"meta": meta, **items}, indent=1), encoding="utf-8")


def _mvtec_ad2(root: Path, category: str, rng: np.random.Generator, size: tuple[int, int],
               counts: tuple[int, int, int]) -> None:
    """train/good, validation/good, test_public/{good,bad,ground_truth/bad/*_mask.png} and
    the unlabelled test_private (NNN_regular.png) and test_private_mixed (NNN_mixed.png)."""
    n_train, n_good, n_defect = counts
    obj = root / category
    folders = [("train/good", False, n_train), ("validation/good", False, 2),
               ("test_public/good", False, n_good), ("test_public/bad", True, n_defect)]
    for folder, defective, n in folders:
        for i in range(n):
            image, mask = _pair(rng, size, defective, False, 255)
            save_image(obj / folder / f"{i:03d}_regular.png", image)
            if defective:
                save_image(obj / "test_public/ground_truth/bad" / f"{i:03d}_regular_mask.png", mask)
    for split, suffix in (("test_private", "regular"), ("test_private_mixed", "mixed")):
        for i in range(n_good + n_defect):
            image, _ = _pair(rng, size, i % 2 == 1, False, 255)
            save_image(obj / split / f"{i:03d}_{suffix}.png", image)
