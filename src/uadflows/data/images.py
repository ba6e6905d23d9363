"""Reading images and masks from disk, checking them, and batching them for a backbone."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from uadflows.data.base import DatasetError, Sample

if TYPE_CHECKING:  # torch is imported on use: `uadflows verify` and indexing stay light
    import torch

# Suffixes (lower case) taken as images when a folder is listed; anything else is ignored.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# PIL decodes with the GIL released, so threads give real parallelism for checks/batches.
_WORKERS = min(8, os.cpu_count() or 1)


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - PIL's parsers raise OSError, ValueError,
        # struct.error, DecompressionBombError... on bad bytes (found by tests/test_fuzz.py)
        raise DatasetError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from None


def _decoded(path: Path) -> Image.Image:
    """Open and fully decode, so a truncated or corrupt file fails here."""
    img = _open(path)
    try:
        img.load()
    except Exception as exc:  # noqa: BLE001 - as in _open: any decoder error is the file's
        raise DatasetError(f"{path}: unreadable or truncated image ({type(exc).__name__}: "
                           f"{exc})") from None
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: PIL's convert("RGB") clips at 255, so rescale to 8 bits first.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return img if img.mode == "RGB" else img.convert("RGB")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """uint8 array (H, W, 3); grayscale, palette and RGBA images are converted to RGB."""
    return np.asarray(_to_rgb(_decoded(Path(path))), dtype=np.uint8).copy()


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """bool array (H, W) at the mask's own size: any non-zero value is anomalous.

    VisA masks hold class values (not 0/255) and some masks are saved as RGB; both are
    handled: a pixel is anomalous when any of its (colour) channels is non-zero.
    """
    img = _decoded(Path(path))
    if img.mode == "P":
        img = img.convert("L")  # palette index 0 need not be black
    arr = np.asarray(img)
    if arr.ndim == 3:
        channels = 3 if arr.shape[2] >= 3 else 1  # ignore alpha (RGBA) / (LA)
        return np.any(arr[..., :channels] != 0, axis=2)
    return arr != 0


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) read from the file header, without decoding the pixels."""
    with _open(Path(path)) as img:
        width, height = img.size
    return height, width


def check_image(path: str | os.PathLike) -> tuple[int, int]:
    """Decode the whole file (catches truncation) and return its (H, W)."""
    with _decoded(Path(path)) as img:
        width, height = img.size
    return height, width


def check_images(paths: Sequence[Path], decode: bool = True) -> list[tuple[int, int] | DatasetError]:
    """Size of every file, or the DatasetError it raised, in the order given (threaded)."""
    probe = check_image if decode else image_size

    def one(path: Path) -> tuple[int, int] | DatasetError:
        try:
            return probe(path)
        except DatasetError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        return list(pool.map(one, paths))


def sample_mask(sample: Sample) -> np.ndarray:
    """Ground truth of a sample at its image's size: its mask, or all False when it has none."""
    if sample.mask is not None:
        return read_mask(sample.mask)
    return np.zeros(image_size(sample.image), dtype=bool)


def _image_tensor(item: Sample | str | os.PathLike, size: tuple[int, int]) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    path = item.image if isinstance(item, Sample) else Path(item)
    pixels = torch.from_numpy(read_image(path)).permute(2, 0, 1).float().div_(255.0)
    if tuple(pixels.shape[-2:]) != tuple(size):
        pixels = F.interpolate(pixels[None], size=size, mode="bilinear", align_corners=False,
                               antialias=True)[0]
    return pixels.clamp_(0.0, 1.0)


def load_batch(samples_or_paths: Iterable[Sample | str | os.PathLike], size: tuple[int, int]) -> torch.Tensor:
    """float32 (B, 3, H, W) in [0, 1], each image resized (bilinear, antialiased) to ``size``.

    No mean/std normalisation here: the extractor applies its own (ExtractorSpec.mean/std).
    """
    items = list(samples_or_paths)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"load_batch: size must be (H, W) with positive values, got {size!r}")
    if not items:
        raise ValueError("load_batch: no images given")
    import torch

    size = (int(size[0]), int(size[1]))
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        tensors = list(pool.map(lambda item: _image_tensor(item, size), items))
    return torch.stack(tensors).contiguous()
