"""Benchmark of the shared evaluator (not a test: run it by hand, once).

    PYTHONPATH=src .venv/bin/python benchmarks/metrics.py            # every part
    PYTHONPATH=src .venv/bin/python benchmarks/metrics.py --part fast  # one part, JSON out

Parts, each in its own subprocess so that one's memory never counts in another's:
- literal: AU-PRO by the official definition written literally (tests/test_metrics_aupro.py:
  every pixel sorted) on 117 maps of 1024 x 1024 with realistic blobs (MVTec-like).
- fast:    ``uadflows.metrics.au_pro`` on the same data, then ``pixel_metrics``.
- visa:    ``evaluate`` (every pixel metric, resolution "original") on a VisA-sized category:
           200 maps of 256 x 256 upsampled one by one to about 1500 x 1000.
Memory: tracemalloc's peak during the call (numpy's allocations beyond the inputs) and the
process's maximum resident set size (inputs, Python and libraries included).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.draw import ellipse

ROOT = Path(__file__).resolve().parents[1]
GB = 1024**3


def blob_mask(rng: np.random.Generator, shape: tuple[int, int], n_blobs: int) -> np.ndarray:
    """Irregular defects: each a union of two overlapping rotated ellipses (a few px to
    ~10% of the image side)."""
    mask = np.zeros(shape, bool)
    h, w = shape
    for _ in range(n_blobs):
        r, c = rng.integers(h // 10, h - h // 10), rng.integers(w // 10, w - w // 10)
        size = float(np.exp(rng.uniform(np.log(4), np.log(0.2 * min(h, w)))))
        for _ in range(2):
            rr, cc = ellipse(r + rng.normal(0, size / 2), c + rng.normal(0, size / 2),
                             size * rng.uniform(0.3, 1.0), size * rng.uniform(0.3, 1.0),
                             shape=shape, rotation=rng.uniform(0, np.pi))
            mask[rr, cc] = True
    return mask


def low_res_map(rng: np.random.Generator, mask: np.ndarray, side: int) -> np.ndarray:
    """A model-resolution map: smooth noise, a response over the defects (strength varies,
    some missed), and a few false alarms."""
    noise = ndimage.gaussian_filter(rng.normal(0, 1, (side, side)), 1.5)
    noise /= noise.std()
    defect = ndimage.zoom(mask.astype(np.float32), (side / mask.shape[0], side / mask.shape[1]), order=1)
    response = ndimage.gaussian_filter(defect, 1.0) * rng.uniform(2.0, 8.0)
    false_alarm = np.zeros((side, side))
    for _ in range(rng.integers(0, 4)):
        false_alarm[rng.integers(side), rng.integers(side)] = rng.uniform(10, 40)
    return (noise + response + ndimage.gaussian_filter(false_alarm, 2.0)).astype(np.float32)


def mvtec_like(n: int = 117, size: int = 1024, side: int = 64, seed: int = 0):
    """(n, size, size) float32 maps (low-res maps upsampled bilinear) and bool masks."""
    from uadflows.metrics.resize import upsample_map

    rng = np.random.default_rng(seed)
    maps = np.empty((n, size, size), np.float32)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        if i % 3:  # two thirds defective, as in most MVTec AD test sets
            masks[i] = blob_mask(rng, (size, size), int(rng.integers(1, 4)))
        maps[i] = upsample_map(low_res_map(rng, masks[i], side), (size, size))
    return maps, masks


def visa_like(n: int = 200, side: int = 256, seed: int = 1):
    """Labels, image scores, (n, side, side) maps and full-size masks (~1500 x 1000)."""
    rng = np.random.default_rng(seed)
    shapes = [(1000, 1500), (1000, 1562), (1024, 1500)]
    labels = np.arange(n) % 2  # VisA test sets: about half normal, half anomalous
    maps = np.empty((n, side, side), np.float32)
    masks = []
    for i in range(n):
        mask = np.zeros(shapes[i % 3], bool)
        if labels[i]:
            mask = blob_mask(rng, mask.shape, int(rng.integers(1, 3)))
        maps[i] = low_res_map(rng, mask, side)
        masks.append(mask)
    return labels, maps.max(axis=(1, 2)), maps, masks


def measure(fn):
    """Run fn once: (result, seconds, tracemalloc peak in bytes)."""
    tracemalloc.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, seconds, peak


def max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def run_part(part: str, small: bool) -> dict:
    if part in ("literal", "fast"):
        maps, masks = mvtec_like(6, 256) if small else mvtec_like()
        out = {"pixels": int(maps.size), "anomalous_share": float(masks.mean()),
               "input_bytes": int(maps.nbytes + masks.nbytes), "rss_before": max_rss()}
        if part == "literal":
            sys.path.insert(0, str(ROOT / "tests"))
            from test_metrics_aupro import literal_au_pro

            value, seconds, peak = measure(lambda: literal_au_pro(maps, masks, 0.3))
            out.update(au_pro=value, seconds=seconds, peak=peak, rss=max_rss())
        else:
            from uadflows.metrics import au_pro, pixel_metrics

            value, seconds, peak = measure(lambda: au_pro(maps, masks, 0.3))
            out.update(au_pro=value, seconds=seconds, peak=peak, rss=max_rss())
            full, seconds, peak = measure(lambda: pixel_metrics(maps, masks, 0.3))
            out.update(pixel=full, pixel_seconds=seconds, pixel_peak=peak, pixel_rss=max_rss())
        return out
    if part == "visa":
        import torch  # noqa: F401  (imported by the pipeline anyway; not part of the timing)

        from uadflows.metrics import evaluate

        labels, scores, maps, masks = visa_like(6) if small else visa_like()
        pixels = sum(m.size for m in masks)
        out = {"pixels": int(pixels), "anomalous_share": float(sum(m.sum() for m in masks) / pixels),
               "input_bytes": int(maps.nbytes + pixels), "rss_before": max_rss()}
        metrics, seconds, peak = measure(lambda: evaluate(labels, scores, maps, masks))
        out.update(metrics=metrics, seconds=seconds, peak=peak, rss=max_rss())
        return out
    raise SystemExit(f"--part: unknown part {part!r}")


def subprocess_part(part: str, small: bool) -> dict:
    command = [sys.executable, __file__, "--part", part] + (["--small"] if small else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"part {part} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["literal", "fast", "visa"], help="run one part here, print JSON")
    parser.add_argument("--small", action="store_true", help="a few small maps: checks the script runs")
    args = parser.parse_args()
    if args.part:
        print(json.dumps(run_part(args.part, args.small)))
        return

    literal, fast = subprocess_part("literal", args.small), subprocess_part("fast", args.small)
    print(f"AU-PRO (limit 0.3), {'6 maps of 256 x 256' if args.small else '117 maps of 1024 x 1024'} = {fast['pixels'] / 1e6:.1f} Mpx, "
          f"{100 * fast['anomalous_share']:.2f}% anomalous, inputs {fast['input_bytes'] / GB:.2f} GB")
    for name, r in (("literal full sort", literal), ("fast (uadflows)", fast)):
        print(f"  {name:18s} au_pro={r['au_pro']:.10f}  time {r['seconds']:7.2f} s  "
              f"peak extra (tracemalloc) {r['peak'] / GB:5.2f} GB  max RSS {r['rss'] / GB:5.2f} GB")
    print(f"  speed-up {literal['seconds'] / fast['seconds']:.1f}x, "
          f"peak extra memory {literal['peak'] / fast['peak']:.1f}x lower, "
          f"|difference| {abs(literal['au_pro'] - fast['au_pro']):.1e}")
    print(f"  pixel_metrics (AUROC, AP, F1-max, AU-PRO) on the same maps: {fast['pixel_seconds']:.2f} s, "
          f"peak extra {fast['pixel_peak'] / GB:.2f} GB, max RSS {fast['pixel_rss'] / GB:.2f} GB")
    print("   ", {k: round(v, 6) for k, v in fast["pixel"].items()})

    visa = subprocess_part("visa", args.small)
    print(f"VisA-sized category, evaluate(resolution='original'): {6 if args.small else 200} maps 256 x 256 -> "
          f"{visa['pixels'] / 1e6:.1f} Mpx, {100 * visa['anomalous_share']:.2f}% anomalous")
    print(f"  time {visa['seconds']:.2f} s, peak extra (tracemalloc) {visa['peak'] / GB:.2f} GB, "
          f"max RSS {visa['rss'] / GB:.2f} GB (inputs {visa['input_bytes'] / GB:.2f} GB)")
    print("   ", {k: (round(v, 6) if isinstance(v, float) else v) for k, v in visa["metrics"].items()})


if __name__ == "__main__":
    main()
