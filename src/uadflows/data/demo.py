"""The demo dataset: real texture photographs shipped in scikit-image, synthetic defects.

Each category is one 512x512 grayscale photograph (``skimage.data.brick/grass/gravel``),
tinted mildly per category to give RGB images. Crops are 128x128 source pixels (resampled
to ``image_size`` when that differs) at a random position, with a random flip and
rotation by a multiple of 90 degrees. Training crops come from the left columns of the
photograph, test crops from the right columns, with a gap between them, so no test pixel
was seen in training. Defects (scratch, hole, stain, cut) are drawn with hard edges in
colours far from the texture, and the mask is exactly the set of pixels the defect changed.

Everything is drawn from ``numpy.random.SeedSequence([seed, crc32(category), split, i])``,
so one seed gives byte-identical files, and adding a category changes no other.
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata
from skimage import draw

from uadflows.data.base import DEMO_N_TRAIN as DEFAULT_N_TRAIN, DatasetError

CATEGORIES = ("brick", "grass", "gravel")
DEFECT_TYPES = ("scratch", "hole", "stain", "cut")
CROP = 128  # side of a crop in source pixels
TRAIN_COLUMNS = (0, 288)  # [start, stop) columns of the photograph used for training crops
TEST_COLUMNS = (320, 512)  # disjoint from TRAIN_COLUMNS (32 px gap)
STAMP = ".uadflows_demo.json"  # lists the categories make_demo wrote here, and how
# Mild per-category colour, so that the RGB channels are not all equal.
TINTS = {"brick": (1.0, 0.82, 0.72), "grass": (0.80, 1.0, 0.70), "gravel": (0.95, 0.95, 1.0)}
_SPLIT_CODES = {"train": 0, "test_good": 1, "test_defect": 2}


@lru_cache(maxsize=None)
def source_photo(category: str) -> np.ndarray:
    """The 512x512 uint8 grayscale photograph behind a demo category."""
    if category not in CATEGORIES:
        raise DatasetError(f"unknown demo category '{category}'; choose from {', '.join(CATEGORIES)}")
    photo = np.asarray(getattr(skdata, category)(), dtype=np.uint8)
    photo.setflags(write=False)
    return photo


def _rng(seed: int, category: str, split: str, index: int) -> np.random.Generator:
    entropy = [seed, zlib.crc32(category.encode()), _SPLIT_CODES[split], index]
    return np.random.default_rng(np.random.SeedSequence(entropy))


@dataclass(frozen=True)
class CropPlan:
    """Where a crop comes from: top-left (row, col) in the photograph, 90-degree turns, flip."""

    row: int
    col: int
    turns: int
    flip: bool


def crop_plan(rng: np.random.Generator, split: str) -> CropPlan:
    start, stop = TRAIN_COLUMNS if split == "train" else TEST_COLUMNS
    row = int(rng.integers(0, 512 - CROP + 1))
    col = int(rng.integers(start, stop - CROP + 1))
    return CropPlan(row, col, int(rng.integers(0, 4)), bool(rng.integers(0, 2)))


def render_crop(category: str, plan: CropPlan, image_size: int) -> np.ndarray:
    """uint8 (S, S, 3) tinted crop of the photograph, S = image_size."""
    patch = source_photo(category)[plan.row:plan.row + CROP, plan.col:plan.col + CROP]
    patch = np.rot90(patch, plan.turns)
    if plan.flip:
        patch = patch[:, ::-1]
    if image_size != CROP:
        patch = np.asarray(Image.fromarray(np.ascontiguousarray(patch)).resize(
            (image_size, image_size), Image.Resampling.BICUBIC))
    tinted = patch[..., None].astype(np.float64) * np.asarray(TINTS[category])
    return np.clip(np.rint(tinted), 0, 255).astype(np.uint8)


# ---- defects: each returns the boolean shape it paints and the colours to paint there ----

def _thick_curve(points: np.ndarray, width: float, size: int) -> np.ndarray:
    """Pixels within width/2 of a densely sampled polyline."""
    rows, cols = np.mgrid[0:size, 0:size]
    shape = np.zeros((size, size), bool)
    for r, c in points:
        shape |= (rows - r) ** 2 + (cols - c) ** 2 <= (width / 2) ** 2
    return shape


def _scratch(rng: np.random.Generator, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size, scale = img.shape[0], img.shape[0] / CROP
    length = rng.uniform(0.35, 0.6) * size
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.sin(angle), np.cos(angle)])
    centre = rng.uniform(0.3, 0.7, 2) * size
    start, end = centre - direction * length / 2, centre + direction * length / 2
    bend = np.array([-direction[1], direction[0]]) * rng.uniform(-0.2, 0.2) * length
    t = np.linspace(0, 1, int(length * 2))[:, None]
    curve = (1 - t) ** 2 * start + 2 * t * (1 - t) * (centre + bend) + t ** 2 * end
    width = rng.uniform(2.0, 3.0) * scale
    core = _thick_curve(curve, width, size)
    rim = _thick_curve(curve, width + 2.5 * scale, size)
    # a bright groove with a dark rim stands out on bright and dark textures alike
    paint = np.where(core[..., None], 240.0, 25.0) + rng.normal(0, 4, (size, size, 1))
    return rim, paint


def _hole(rng: np.random.Generator, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size, scale = img.shape[0], img.shape[0] / CROP
    radii = rng.uniform(6, 11, 2) * scale
    centre = rng.uniform(0.25, 0.75, 2) * size
    rr, cc = draw.ellipse(centre[0], centre[1], radii[0], radii[1], (size, size),
                          rotation=rng.uniform(0, np.pi))
    shape = np.zeros((size, size), bool)
    shape[rr, cc] = True
    return shape, np.full((size, size, 3), 12.0) + rng.uniform(0, 10, (size, size, 1))


def _stain(rng: np.random.Generator, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size, scale = img.shape[0], img.shape[0] / CROP
    centre = rng.uniform(0.3, 0.7, 2) * size
    shape = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(3, 6))):  # a few overlapping blobs: irregular outline
        offset = rng.normal(0, 5 * scale, 2)
        rr, cc = draw.disk(tuple(centre + offset), rng.uniform(5, 9) * scale, shape=(size, size))
        shape[rr, cc] = True
    colours = ((170, 80, 20), (40, 60, 190), (200, 190, 30))  # rust, ink, oil
    colour = np.asarray(colours[int(rng.integers(0, len(colours)))], dtype=np.float64)
    return shape, 0.35 * img.astype(np.float64) + 0.65 * colour


def _cut(rng: np.random.Generator, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size, scale = img.shape[0], img.shape[0] / CROP
    length = rng.uniform(0.35, 0.55) * size
    angle = rng.uniform(0, np.pi)
    along = np.array([np.sin(angle), np.cos(angle)])
    across = np.array([-along[1], along[0]]) * rng.uniform(3.5, 5.0) * scale
    centre = rng.uniform(0.3, 0.7, 2) * size
    corners = np.array([centre - along * length / 2, centre + across,
                        centre + along * length / 2, centre - across])  # a slit, widest mid-way
    rr, cc = draw.polygon(corners[:, 0], corners[:, 1], (size, size))
    shape = np.zeros((size, size), bool)
    shape[rr, cc] = True
    return shape, np.full((size, size, 3), 4.0) + rng.uniform(0, 6, (size, size, 1))


_DRAW = {"scratch": _scratch, "hole": _hole, "stain": _stain, "cut": _cut}


def add_defect(rng: np.random.Generator, img: np.ndarray, defect: str) -> tuple[np.ndarray, np.ndarray]:
    """(defective uint8 image, bool mask of exactly the pixels that changed)."""
    shape, paint = _DRAW[defect](rng, img)
    out = img.copy()
    out[shape] = np.clip(np.rint(paint[shape]), 0, 255).astype(np.uint8)
    return out, np.any(out != img, axis=2)


# ---- writing -----------------------------------------------------------------------------

def _png_bytes(array: np.ndarray) -> bytes:
    buffer = BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")  # no timestamp chunk: deterministic
    return buffer.getvalue()


def _write_if_changed(path: Path, payload: bytes) -> None:
    """Atomic (temp file + os.replace) and idempotent (identical files are left alone)."""
    if path.is_file() and path.read_bytes() == payload:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def category_files(category: str, *, seed: int, image_size: int, n_train: int,
                   n_test_good: int, n_test_defect: int) -> dict[str, bytes]:
    """Relative path -> PNG bytes of one demo category."""
    files: dict[str, bytes] = {}
    for i in range(n_train):
        plan = crop_plan(_rng(seed, category, "train", i), "train")
        files[f"train/good/{i:03d}.png"] = _png_bytes(render_crop(category, plan, image_size))
    for i in range(n_test_good):
        plan = crop_plan(_rng(seed, category, "test_good", i), "test")
        files[f"test/good/{i:03d}.png"] = _png_bytes(render_crop(category, plan, image_size))
    for i in range(n_test_defect):
        rng = _rng(seed, category, "test_defect", i)
        defect, number = DEFECT_TYPES[i % len(DEFECT_TYPES)], i // len(DEFECT_TYPES)
        image, mask = add_defect(rng, render_crop(category, crop_plan(rng, "test"), image_size), defect)
        files[f"test/{defect}/{number:03d}.png"] = _png_bytes(image)
        files[f"ground_truth/{defect}/{number:03d}_mask.png"] = _png_bytes(mask.astype(np.uint8) * 255)
    return files


def make_demo(root: str | os.PathLike, categories: tuple[str, ...] | list[str] = CATEGORIES, *,
              seed: int = 0, image_size: int = 128, n_train: int = DEFAULT_N_TRAIN, n_test_good: int = 10,
              n_test_defect: int = 20) -> Path:
    """Write the demo dataset in the MVTec AD layout under ``root``; returns ``root``.

    Defaults: 128 px, per category 40 train, 10 good and 20 defective test images (5 per
    defect type). A re-run with the same arguments leaves every file byte-identical (and
    untouched); files a previous run made that are no longer wanted are removed. Refuses
    to write into an existing category folder that is not demo data.
    """
    root = Path(root)
    categories = (categories,) if isinstance(categories, str) else tuple(categories)
    for name, value, least in (("image_size", image_size, 32), ("n_train", n_train, 1),
                               ("n_test_good", n_test_good, 1), ("n_test_defect", n_test_defect, 1)):
        if not isinstance(value, int) or value < least:
            raise DatasetError(f"make_demo: {name} must be an integer >= {least}, got {value!r}")
    if not categories or len(set(categories)) != len(categories):
        raise DatasetError(f"make_demo: categories must be distinct names, got {categories}")
    for category in categories:
        source_photo(category)  # unknown name -> DatasetError before anything is written
    stamp = root / STAMP
    try:  # category -> settings it was made with (None while being written)
        made = json.loads(stamp.read_text()) if stamp.is_file() else {}
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{stamp}: unreadable demo stamp ({exc}); delete it") from None
    foreign = [root / c for c in categories if (root / c).exists() and c not in made]
    if foreign:
        raise DatasetError(f"{foreign[0]}: exists but {stamp} does not list it; refusing to "
                           "overwrite data that make_demo did not write")
    settings = {"seed": seed, "image_size": image_size, "n_train": n_train,
                "n_test_good": n_test_good, "n_test_defect": n_test_defect}

    def write_stamp() -> None:
        _write_if_changed(stamp, (json.dumps(made, indent=1, sort_keys=True) + "\n").encode())

    for category in categories:
        files = category_files(category, **settings)
        if made.get(category) != settings:
            made[category] = None  # "being written": complete only once the settings are back
            write_stamp()
        folder = root / category
        for relative, payload in files.items():
            _write_if_changed(folder / relative, payload)
        for old in sorted(folder.rglob("*"), reverse=True):  # leftovers of other settings
            if old.is_file() and old.relative_to(folder).as_posix() not in files:
                old.unlink()
            elif old.is_dir() and not any(old.iterdir()):
                old.rmdir()
        made[category] = settings
    write_stamp()
    return root
