"""Real-IAD (Wang et al., CVPR 2024, arXiv 2403.12580) as distributed: the image folders of
one resolution and the authors' JSON split files.

    {root}/{object}/OK/S0001/{object}_0001_OK_C1_{time}.jpg            root = realiad_1024 (or
    {root}/{object}/NG/{code}/S0101/{object}_0101_NG_C3_{time}.jpg        _256, _512, _raw)
    {root}/{object}/NG/{code}/S0101/{object}_0101_NG_C3_{time}_mask.png
    {root}/../realiad_jsons/realiad_jsons/{object}.json                 the official split

A JSON file is ``{"meta": {"prefix", "normal_class", ...}, "train": [...], "test": [...]}``;
an item is ``{"category", "anomaly_class", "image_path", "mask_path"}``, paths relative to
``{root}/{prefix}`` (prefix: the object; anomalib's RealIADDataset and the authors' ADer
loader read them so). ``anomaly_class`` is ``normal_class`` ("OK") or a defect code (AK pit,
BX deformation, CH abrasion, HS scratch, PS damage, QS missing parts, YW foreign objects,
ZW contamination).

Protocol: every view (C1..C5) is a sample of its own, as in the paper's image- and
pixel-level tables; ``sample_groups`` gives each image its physical sample (its S-folder)
for the paper's sample-level score (the maximum over the views, anomalous when any view
is). The other split files (``realiad_jsons_sv``, ``realiad_jsons_fuiad_*``) are other
protocols and are not read.
"""

from __future__ import annotations

import json
from pathlib import Path

from uadflows.data.base import DatasetError, Sample
from uadflows.data.tree import GOOD

REALIAD_OBJECTS = (
    "audiojack", "bottle_cap", "button_battery", "end_cap", "eraser", "fire_hood", "mint",
    "mounts", "pcb", "phone_battery", "plastic_nut", "plastic_plug", "porcelain_doll",
    "regulator", "rolled_strip_base", "sim_card_set", "switch", "tape", "terminalblock",
    "toothbrush", "toy", "toy_brick", "transistor1", "u_block", "usb", "usb_adaptor", "vcpill",
    "wooden_beads", "woodstick", "zipper",
)
SPLIT_FOLDER = Path("realiad_jsons") / "realiad_jsons"
ITEM_KEYS = ("anomaly_class", "image_path", "mask_path")


def split_json(root: Path, category: str) -> Path:
    """The official split file of ``category``: next to the image folder (as unpacked), or
    inside it."""
    candidates = [root.parent / SPLIT_FOLDER / f"{category}.json",
                  root / SPLIT_FOLDER / f"{category}.json"]
    for path in candidates:
        if path.is_file():
            return path
    raise DatasetError(f"{candidates[0]}: Real-IAD split file not found (nor {candidates[1]}); "
                       "unpack realiad_jsons.zip next to the image folder given as root")


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable split file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("meta"), dict):
        raise DatasetError(f"{path}: expected an object with keys meta, train, test")
    for split in ("train", "test"):
        if not isinstance(data.get(split), list) or not data[split]:
            raise DatasetError(f"{path}: key '{split}' missing or empty (a list of images)")
    return data


def index_realiad(root: Path, category: str) -> list[Sample]:
    """Every image of the category's split file (unsorted, files not yet decoded)."""
    path = split_json(root, category)
    data = _load(path)
    normal = str(data["meta"].get("normal_class") or "OK")
    base = root / (data["meta"].get("prefix") or category)
    if not base.is_dir():
        raise DatasetError(f"{base}: image folder of '{category}' not found under root {root}")
    samples: list[Sample] = []
    seen: set[Path] = set()
    for split in ("train", "test"):
        for i, item in enumerate(data[split]):
            where = f"{path}: {split}[{i}]"
            missing = [k for k in ITEM_KEYS if not isinstance(item, dict) or k not in item]
            if missing:
                raise DatasetError(f"{where}: missing key(s) {', '.join(missing)}")
            label = int(item["anomaly_class"] != normal)
            if split == "train" and label:
                raise DatasetError(f"{where}: anomalous image ({item['anomaly_class']}) in the "
                                   "train split (one-class training needs normal images only)")
            image = base / str(item["image_path"])
            if not image.is_file():
                raise DatasetError(f"{where}: image {image} does not exist")
            if image in seen:
                raise DatasetError(f"{where}: image {image} is listed twice")
            seen.add(image)
            mask = None
            if label:
                if not item["mask_path"]:
                    raise DatasetError(f"{where}: anomalous image {image} has no mask_path")
                mask = base / str(item["mask_path"])
                if not mask.is_file():
                    raise DatasetError(f"{where}: mask {mask} does not exist")
            samples.append(Sample(image, split, label, str(item["anomaly_class"]) if label else GOOD,
                                  mask))
    if not any(s.label for s in samples):
        raise DatasetError(f"{path}: empty split, no anomalous test images")
    if not any(s.split == "test" and not s.label for s in samples):
        raise DatasetError(f"{path}: empty split, no normal test images")
    return samples


def sample_groups(images: list[str | Path]) -> list[str]:
    """The physical sample of each image (its S-folder, e.g. ``NG/HS/S0101``): the views of
    one sample share it."""
    return [Path(p).parent.as_posix() for p in images]
