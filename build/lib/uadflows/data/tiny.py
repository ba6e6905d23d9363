"""Tiny synthetic datasets in each real layout, for tests (ours and the workflow's).

The pixels are noise with a bright square on defective images; what matters is that the
tree, file names, extensions, image modes and mask values are exactly those the authors
distribute, including their odd cases: BTAD's mixed .bmp/.png, VisA's masks with values
other than 255 and its csv split, single-channel (grayscale) MVTec images.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image

from uadflows.data.base import DatasetError

DEFAULT_CATEGORIES = {"mvtec": ("bottle",), "btad": ("01",), "visa": ("candle",),
                      "folder": ("widget",)}


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
    csv_rows: list[list[str]] = []
    for category in categories or DEFAULT_CATEGORIES[fmt]:
        cat = root / category
        for i in range(n_train + n_test_good + n_test_defect):
            defective = i >= n_train + n_test_good
            split = "train" if i < n_train else "test"
            number = i - (n_train + n_test_good if defective else n_train if split == "test" else 0)
            mask_value = int(rng.integers(1, 4)) if fmt == "visa" else 255  # VisA: class ids
            image, mask = _pair(rng, size, defective, grayscale, mask_value)
            if fmt in ("mvtec", "folder"):
                folder = "good" if not defective else "crack"
                save_image(cat / split / folder / f"{number:03d}.png", image)
                if defective and (fmt == "mvtec" or ground_truth):
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
