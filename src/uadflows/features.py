"""The feature cache: a frozen backbone's features, computed once per
(dataset, category, extractor) and read by every method and seed.

Layout of one cache folder (its name is ``ExtractorSpec.key()``)::

    meta.json                 spec, index digest, per-split sample count and array shapes
    {split}/scale{i}.npy      float16 (N, C_i, H_i, W_i), read memory-mapped (train, test,
                              and validation where the dataset has one: MVTec AD 2)
    {split}/samples.csv       the index rows of the split, in array order

Half precision halves the disk and page-cache footprint; flows train in float32 on
batches converted on the fly. The folder is written under a temporary name and renamed,
so a killed extraction never leaves a cache that looks complete (the arrays' blocks are
reserved before they are mapped, so a full disk raises an error instead of SIGBUS); ``open_cache`` checks
every array's size against meta.json, so a truncated file is caught, not read as garbage.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from uadflows.io import atomic_dir, preallocate, read_json, write_json

SPLITS = ("train", "test")
FORMAT_VERSION = 1


class CacheError(RuntimeError):
    """A missing, stale or corrupted feature cache; the message names the file."""


def index_digest(index_csv: str | Path) -> str:
    """Digest of the index file: the dataset version the features belong to."""
    return hashlib.sha256(Path(index_csv).read_bytes()).hexdigest()[:16]


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is available")
    return torch.device(device)


def extract(
    index_csv: str | Path,
    out_dir: str | Path,
    extractor_args: dict[str, Any],
    *,
    batch_size: int = 16,
    device: str = "auto",
) -> dict[str, Any]:
    """Run the frozen backbone over every image of the index and write the cache."""
    from uadflows.backbones import create_extractor
    from uadflows.data import load_batch, read_index

    samples = read_index(index_csv)
    dev = resolve_device(device)
    args = {k: v for k, v in extractor_args.items() if v is not None}
    extractor = create_extractor(**args).to(dev).eval()
    spec = extractor.spec
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "spec": asdict(spec),
        "key": spec.key(),
        "index": str(index_csv),
        "index_digest": index_digest(index_csv),
        "splits": {},
    }
    # validation (MVTec AD 2's normal images for thresholds) only where the index has it
    splits = SPLITS + (("validation",) if any(s.split == "validation" for s in samples) else ())
    with atomic_dir(out_dir) as tmp:
        for split in splits:
            part = [s for s in samples if s.split == split]
            if not part:
                raise CacheError(f"{index_csv}: no {split} samples to extract")
            (tmp / split).mkdir()
            arrays = [
                np.lib.format.open_memmap(
                    tmp / split / f"scale{i}.npy", mode="w+", dtype=np.float16,
                    shape=(len(part), c, h, w),
                )
                for i, (c, (h, w)) in enumerate(zip(spec.channels, spec.shapes))
            ]
            for i in range(len(arrays)):
                preallocate(tmp / split / f"scale{i}.npy")
            with torch.inference_mode():
                for start in range(0, len(part), batch_size):
                    chunk = part[start : start + batch_size]
                    images = load_batch(chunk, tuple(spec.image_size)).to(dev)
                    feats = extractor(images)
                    if len(feats) != len(arrays):
                        raise CacheError(
                            f"extractor {spec.name} returned {len(feats)} scales, spec says {len(arrays)}"
                        )
                    for arr, f in zip(arrays, feats):
                        if tuple(f.shape[1:]) != arr.shape[1:]:
                            raise CacheError(
                                f"extractor {spec.name}: feature shape {tuple(f.shape[1:])} differs "
                                f"from its spec {arr.shape[1:]}"
                            )
                        arr[start : start + len(chunk)] = f.float().cpu().numpy().astype(np.float16)
            for arr in arrays:
                arr.flush()
            del arrays
            _write_samples(tmp / split / "samples.csv", part)
            meta["splits"][split] = {
                "n": len(part),
                "files": {
                    f"scale{i}.npy": (tmp / split / f"scale{i}.npy").stat().st_size
                    for i in range(len(spec.channels))
                },
            }
        meta["seconds"] = round(time.perf_counter() - t0, 3)
        meta["bytes"] = sum(sum(s["files"].values()) for s in meta["splits"].values())
        meta["device"] = str(dev)
        write_json(tmp / "meta.json", meta)
    return meta


def _write_samples(path: Path, samples) -> None:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "split", "label", "defect", "mask"])
        for s in samples:
            w.writerow([s.image, s.split, s.label, s.defect, s.mask or ""])


class FeatureSplit:
    """The memory-mapped arrays of one split; batches come straight from the maps."""

    def __init__(self, folder: Path, n: int, n_scales: int):
        self.folder = folder
        self.arrays = [np.load(folder / f"scale{i}.npy", mmap_mode="r") for i in range(n_scales)]
        self.n = n

    def __len__(self) -> int:
        return self.n

    def batch(self, idx: np.ndarray | slice, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        if isinstance(idx, np.ndarray):
            idx = np.sort(idx)  # sorted reads are sequential on the memory map
        out = []
        for a in self.arrays:
            t = torch.from_numpy(np.array(a[idx]))  # one fp16 copy off the map (writable)
            out.append(t.to(device, non_blocking=True).float())
        return out

    def batches(
        self, batch_size: int, order: np.ndarray | None = None, device: torch.device | str = "cpu"
    ) -> Iterator[tuple[np.ndarray, list[torch.Tensor]]]:
        """Yield (sorted sample indices, features); ``order`` shuffles the batches."""
        order = np.arange(self.n) if order is None else order
        for start in range(0, self.n, batch_size):
            idx = np.sort(order[start : start + batch_size])
            if idx[-1] - idx[0] == len(idx) - 1:  # contiguous: a plain slice of the map
                yield idx, self.batch(slice(int(idx[0]), int(idx[-1]) + 1), device)
            else:
                yield idx, self.batch(idx, device)

    def samples(self):
        from uadflows.data import read_index

        return read_index(self.folder / "samples.csv")


def open_cache(folder: str | Path, *, index_csv: str | Path | None = None) -> dict[str, Any]:
    """Check a cache folder (complete, sizes right, same dataset version) and return meta."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise CacheError(f"{folder}: no meta.json, the feature cache is missing or incomplete")
    try:
        meta = read_json(meta_path)
    except ValueError as e:
        raise CacheError(f"{e}; the extract rule rebuilds it") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CacheError(f"{meta_path}: cache format {meta.get('format_version')}, expected {FORMAT_VERSION}")
    for split, info in meta["splits"].items():
        for name, size in info["files"].items():
            p = folder / split / name
            if not p.is_file():
                raise CacheError(f"{p}: missing from the feature cache")
            if p.stat().st_size != size:
                raise CacheError(
                    f"{p}: {p.stat().st_size} bytes, meta.json says {size}: truncated or corrupted"
                )
    if index_csv is not None and Path(index_csv).is_file():
        if index_digest(index_csv) != meta["index_digest"]:
            raise CacheError(f"{folder}: built from another version of {index_csv}; rebuild it")
    return meta


def load_split(folder: str | Path, split: str, *, index_csv: str | Path | None = None) -> FeatureSplit:
    meta = open_cache(folder, index_csv=index_csv)
    if split not in meta["splits"]:
        raise CacheError(f"{folder}: no split {split!r}")
    return FeatureSplit(Path(folder) / split, meta["splits"][split]["n"], len(meta["spec"]["channels"]))
