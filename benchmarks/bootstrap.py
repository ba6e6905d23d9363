"""Benchmark of the bootstrap (uadflows.stats) against one evaluation (not a test).

    PYTHONPATH=src .venv/bin/python benchmarks/bootstrap.py --json bootstrap.json
    PYTHONPATH=src .venv/bin/python benchmarks/bootstrap.py --quick      # seconds, a smoke check
    PYTHONPATH=src .venv/bin/python benchmarks/bootstrap.py --render bootstrap.json   # markdown

One category, realistic sizes (the data of benchmarks/metrics.py: blobs of rotated
ellipses on two thirds of the images, smooth low-resolution maps with false alarms): 100
test images, maps of 256 x 256 upsampled bilinear to 1024 x 1024 masks (MVTec-sized).
Timed in one process, side by side:
- evaluate:  ``uadflows.metrics.evaluate`` at resolution "original" (the control);
- records:   the extra cost of the per-image histograms (bin edges + recording while the
             evaluator upsamples, i.e. evaluate with ``on_pair`` minus evaluate);
- bootstrap: every metric's interval from the records, 1000 stratified resamples;
- literal:   re-evaluating resampled test sets with ``evaluate`` (a few, extrapolated).
The ratio reported is (records + bootstrap) / evaluate (goal <= 5); the binned point
estimates' largest difference from the exact ones is printed too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metrics import blob_mask, low_res_map  # noqa: E402  (the same synthetic data)

from uadflows.metrics import evaluate, to_map_resolution  # noqa: E402
from uadflows.stats import (  # noqa: E402
    PixelRecorder,
    bin_edges,
    intervals,
    point_estimates,
    records_from_maps,
    resample_counts,
)


def make_data(n: int, side: int, full: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3 != 0).astype(int)  # two thirds defective
    masks = [blob_mask(rng, (full, full), int(rng.integers(1, 4))) if y else np.zeros((full, full), bool)
             for y in labels]
    maps = [low_res_map(rng, m, side).astype(np.float32) for m in masks]
    scores = np.array([m.max() for m in maps], dtype=np.float64)
    return labels, scores, maps, masks


class Clock:
    """Wall and CPU seconds of a block (CPU: this process; the shared machine's load
    stretches wall time, not CPU time)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def run(n: int, side: int, full: int, resamples: int, literal: int, clock: str) -> dict:
    labels, scores, maps, masks = make_data(n, side, full)
    evaluate(labels[:3], scores[:3], maps[:3], masks[:3])  # warm-up: imports torch for resizing
    with Clock() as c_eval:
        exact = evaluate(labels, scores, maps, masks)
    with Clock() as c_records:
        recorder = PixelRecorder(n, bin_edges(maps, to_map_resolution(maps, masks)))
        evaluate(labels, scores, maps, masks, on_pair=recorder)
        records = recorder.fill(records_from_maps(labels, scores, maps, None))
    with Clock() as c_boot:
        bounds = intervals(records, resamples, seed=0)
    with Clock() as c_literal:
        for c in resample_counts(labels, literal, seed=0):
            idx = np.repeat(np.arange(n), c)
            evaluate(labels[idx], scores[idx], [maps[i] for i in idx], [masks[i] for i in idx])
    t_eval, t_eval_records = getattr(c_eval, clock), getattr(c_records, clock)
    t_boot = getattr(c_boot, clock)
    t_literal = getattr(c_literal, clock) / literal * resamples

    binned = point_estimates(records)
    keys = [k for k in binned if k in exact]
    extra = max(t_eval_records - t_eval, 0.0)
    return {
        "images": n, "map_side": side, "mask_side": full, "bins": int(records.normal.shape[1]),
        "resamples": resamples, "clock": clock, "megapixels": round(n * full * full / 1e6, 1),
        "seconds": {"evaluate": t_eval, "evaluate_with_records": t_eval_records, "records": extra,
                    "bootstrap": t_boot, "literal_extrapolated": t_literal, "literal_measured_on": literal},
        "ratio": (extra + t_boot) / t_eval,
        "literal_ratio": t_literal / t_eval,
        "max_binning_error": max(abs(binned[k] - exact[k]) for k in keys),
        "binning_error": {k: abs(binned[k] - exact[k]) for k in keys},
        "intervals": {k: list(v) for k, v in bounds.items()},
        "exact": {k: exact[k] for k in keys},
    }


def render(result: dict) -> str:
    s = result["seconds"]
    lines = [
        f"{result['images']} test images, maps {result['map_side']}^2 upsampled to "
        f"{result['mask_side']}^2 masks ({result['megapixels']} Mpx), {result['bins']} bins, "
        f"{result['resamples']} resamples; {result['clock']} seconds",
        "",
        "| step | seconds | / one evaluation |",
        "|---|---|---|",
        f"| one evaluation (exact, the control) | {s['evaluate']:.2f} | 1.00 |",
        f"| per-image records (extra) | {s['records']:.2f} | {s['records'] / s['evaluate']:.2f} |",
        f"| bootstrap, every metric | {s['bootstrap']:.2f} | {s['bootstrap'] / s['evaluate']:.2f} |",
        f"| **records + bootstrap** | {s['records'] + s['bootstrap']:.2f} | **{result['ratio']:.2f}** |",
        f"| literal bootstrap (re-evaluate each resample; {s['literal_measured_on']} timed, "
        f"extrapolated) | {s['literal_extrapolated']:.0f} | {result['literal_ratio']:.0f} |",
        "",
        f"Largest |binned - exact| point estimate: {result['max_binning_error']:.1e} "
        f"({', '.join(f'{k} {v:.1e}' for k, v in result['binning_error'].items())}).",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="20 images of 64 -> 256 px, 200 resamples")
    p.add_argument("--json", help="write the result here")
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                   help="cpu: process CPU time (robust on a shared machine); wall: elapsed")
    p.add_argument("--render", help="print the markdown table of a result file and exit")
    a = p.parse_args()
    if a.render:
        print(render(json.loads(Path(a.render).read_text())))
        return
    size = (20, 64, 256, 200, 2) if a.quick else (100, 256, 1024, 1000, 3)
    result = run(*size, clock=a.clock)
    result["quick"] = a.quick
    print(render(result))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
