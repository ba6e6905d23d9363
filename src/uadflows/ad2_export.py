"""MVTec AD 2's private test sets: the files its evaluation server accepts, written from a
trained model, and a check that an export is complete before upload.

The tree (the authors' MVTecAD2_public_code_utils: utils.py, DIRECTORY_STRUCTURE and the
checks of check_and_prepare_data_for_upload.py; mvtec_ad_2_public_offline.py for the names)::

    {out}/anomaly_images/{object}/{test_private,test_private_mixed}/{NNN}_{regular,mixed}.tiff
    {out}/anomaly_images_thresholded/{object}/{...same}/{NNN}_{regular,mixed}.png

A TIFF is the continuous anomaly map, single channel, float16; a PNG is the binary
segmentation, single channel, 0 or 255. Both are written at the image's full resolution
(the server compares them with full-resolution masks). Every object and both sets must be
present, with nothing else in the tree. Maps are written one image at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from uadflows.data.mvtec_ad2 import AD2_OBJECTS, PRIVATE_SPLITS, private_images

MAPS, BINARY = "anomaly_images", "anomaly_images_thresholded"
# Images per object in each private set (utils.py, OBJECT_FILE_COUNTER)
OFFICIAL_COUNTS = {"can": 321, "fabric": 314, "fruit_jelly": 255, "rice": 277, "sheet_metal": 142,
                   "vial": 276, "wallplugs": 232, "walnuts": 228}
_LISTED = 4


class ExportError(ValueError):
    """A bad map or threshold given to the export; the message names the image."""


def write_map(out: Path, category: str, split: str, image: Path, score_map: np.ndarray,
              threshold: float) -> None:
    """Both files of one private image: ``score_map`` (H, W) at the image's resolution."""
    half = np.asarray(score_map).astype(np.float16)
    if half.ndim != 2:
        raise ExportError(f"{image}: map of shape {half.shape}, expected (H, W)")
    if not np.isfinite(half).all():
        raise ExportError(f"{image}: map not finite in float16 (|score| > 65504 or NaN); the "
                          "server reads float16 TIFFs: rescale the maps")
    import tifffile

    for folder, suffix in ((MAPS, ".tiff"), (BINARY, ".png")):
        (out / folder / category / split).mkdir(parents=True, exist_ok=True)
    name = out / MAPS / category / split / f"{image.stem}.tiff"
    tifffile.imwrite(name, half)
    binary = np.where(np.asarray(score_map) >= threshold, 255, 0).astype(np.uint8)
    Image.fromarray(binary).save(out / BINARY / category / split / f"{image.stem}.png")


def expected_names(root: Path | None) -> dict[tuple[str, str], list[str]]:
    """Stems expected per (object, set): from the dataset at ``root`` when given (its private
    images), else the official counts."""
    out = {}
    for obj in AD2_OBJECTS:
        for split, suffix in PRIVATE_SPLITS.items():
            if root is not None:
                out[obj, split] = [p.stem for p in private_images(root, obj, split)]
            else:
                out[obj, split] = [f"{i:03d}_{suffix}" for i in range(OFFICIAL_COUNTS[obj])]
    return out


def _listed(names: Iterable[str]) -> str:
    names = sorted(names)
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more


def _entries(folder: Path, required: set[str], what: str) -> Iterator[str]:
    """Faults of one folder's entries: missing or superfluous names."""
    if not folder.is_dir():
        yield f"{folder}: {what} folder missing"
        return
    found = {p.name for p in folder.iterdir()}
    if required - found:
        yield f"{folder}: missing {what}: {_listed(required - found)}"
    if found - required:
        yield f"{folder}: superfluous entries (the server refuses them): {_listed(found - required)}"


def _check_tiff(path: Path, size: tuple[int, int] | None) -> str | None:
    import tifffile

    try:
        arr = tifffile.imread(path)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a fault of the file
        return f"{path}: unreadable TIFF ({exc})"
    if arr.ndim != 2:
        return f"{path}: shape {arr.shape}, expected a single-channel (H, W) map"
    if arr.dtype != np.float16:
        return f"{path}: dtype {arr.dtype}, expected float16"
    if size is not None and arr.shape != size:
        return f"{path}: {arr.shape[0]}x{arr.shape[1]} (HxW) but its image is {size[0]}x{size[1]}"
    return None


def _check_png(path: Path, size: tuple[int, int] | None) -> str | None:
    try:
        with Image.open(path) as img:
            arr = np.asarray(img)
    except Exception as exc:  # noqa: BLE001
        return f"{path}: unreadable PNG ({exc})"
    if arr.ndim != 2:
        return f"{path}: shape {arr.shape}, expected a single-channel (H, W) image"
    if not np.isin(np.unique(arr), (0, 255)).all():
        return f"{path}: values other than 0 and 255"
    if size is not None and arr.shape != size:
        return f"{path}: {arr.shape[0]}x{arr.shape[1]} (HxW) but its image is {size[0]}x{size[1]}"
    return None


def check_export(out: str | Path, root: str | Path | None = None) -> list[str]:
    """Every fault of an export (empty list: complete). With ``root`` (the dataset), the
    expected files are its private images and each map must have its image's size."""
    from uadflows.data import image_size

    out = Path(out)
    root = Path(root) if root is not None else None
    if not out.is_dir():
        return [f"{out}: export folder not found"]
    expected = expected_names(root)
    faults = list(_entries(out, {MAPS, BINARY}, "folders"))
    for folder, suffix, check in ((MAPS, ".tiff", _check_tiff), (BINARY, ".png", _check_png)):
        if not (out / folder).is_dir():
            continue
        faults += _entries(out / folder, set(AD2_OBJECTS), "objects")
        for obj in AD2_OBJECTS:
            if not (out / folder / obj).is_dir():
                continue
            faults += _entries(out / folder / obj, set(PRIVATE_SPLITS), "test sets")
            for split in PRIVATE_SPLITS:
                where = out / folder / obj / split
                stems = expected[obj, split]
                if where.is_dir():  # a missing one is reported with its object above
                    faults += _entries(where, {s + suffix for s in stems}, "files")
                for stem in stems:
                    path = where / f"{stem}{suffix}"
                    if path.is_file():
                        size = image_size(root / obj / split / f"{stem}.png") if root else None
                        fault = check(path, size)
                        if fault:
                            faults.append(fault)
    return faults


def export_category(model_pt: str | Path, root: str | Path, category: str, out: str | Path, *,
                    threshold: float, extractor_args: dict | None = None,
                    batch_size: int = 8, device: str = "auto") -> int:
    """Score both private sets of ``category`` with a trained model and write its files;
    returns the number of images. Features go through float16 as in the feature cache, so
    the maps are those the test set's evaluation saw."""
    import torch

    from uadflows.backbones import create_extractor
    from uadflows.data import image_size, load_batch
    from uadflows.features import resolve_device
    from uadflows.metrics.resize import upsample_map
    from uadflows.train import load_model

    dev = resolve_device(device)
    model, spec, _ = load_model(model_pt, "cpu")
    if model is None:
        raise ExportError(f"{model_pt}: the run failed, there is no model to export")
    model.to(dev)
    if not np.isfinite(threshold):
        raise ExportError(f"threshold {threshold!r}: expected a finite number")
    args = extractor_args or {"name": spec.backbone, "image_size": spec.image_size[0],
                              "pretrained": spec.pretrained, "weights_file": spec.weights_file}
    extractor = create_extractor(**{k: v for k, v in args.items() if v is not None}).to(dev).eval()
    size = tuple(spec.image_size)
    root, out, n = Path(root), Path(out), 0
    for split in PRIVATE_SPLITS:
        images = private_images(root, category, split)
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            with torch.inference_mode():
                feats = [f.half().float() for f in extractor(load_batch(chunk, size).to(dev))]
                maps = model.anomaly_maps(model(feats, with_log_jac=False), size)["map"]
            for image, m in zip(chunk, maps.float().cpu().numpy()):
                write_map(out, category, split, image, upsample_map(m, image_size(image)), threshold)
                n += 1
    return n
