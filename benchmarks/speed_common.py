"""Shared plumbing of the speed and memory benchmarks (benchmarks/speed_*.py, memory.py).

Timing on a shared machine: every measured thing gets a warm-up call, then several timed
calls interleaved with the things it is compared with; we report the minimum (the least
disturbed run) and the median, and ratios of minima. Each backbone or method runs in its
own subprocess so that one's memory and allocator state never count in another's.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
# glibc: keep large blocks in the heap instead of mmap/munmap on every iteration
# (workflow/rules/common.smk sets the same for every job).
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
ALLOCATORS: dict[str, dict[str, str]] = {
    "glibc-default": {},
    "glibc-tuned": TUNED_MALLOC,
    "jemalloc": {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"},
    "tcmalloc": {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"},
}
# Mean train-set size of an MVTec AD category (3629 images / 15 categories): seconds per
# timed batch are scaled to this to give "seconds per epoch" (a computed figure).
MVTEC_MEAN_TRAIN = 3629 / 15
MVTEC_IMAGES = 3629 + 1725
# Flow implementations compared: FrEIA's AllInOneBlock (the reference, dense 1x1-conv
# permutation); "index-perm", the project's block with FrEIA's forward coupling (only the
# permutation is ours: what that part alone buys); "lean", the project's LeanAllInOneBlock.
VARIANTS = ("freia", "index-perm", "lean")


def machine() -> dict[str, Any]:
    """What the numbers ran on (CPU model, cores, load, torch, GPU)."""
    import torch

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2), "torch": torch.__version__,
        "python": platform.python_version(),
        "malloc_env": {k: os.environ[k] for k in (*TUNED_MALLOC, "LD_PRELOAD") if k in os.environ},
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def sync(device: Any) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: Any = "cpu") -> float:
    """Wall seconds of one call (the GPU's queue drained before and after)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], Any]], reps: int, device: Any = "cpu",
                warmup: bool = True) -> dict[str, dict[str, float]]:
    """Time each function ``reps`` times, round-robin, after one untimed warm-up call each:
    {name: {"min": s, "median": s, "runs": n}}."""
    if reps < 1:
        raise ValueError(f"interleaved: reps must be >= 1, got {reps}")
    if warmup:
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(timed(fn, device))
    return {k: {"min": min(v), "median": statistics.median(v), "runs": len(v)} for k, v in times.items()}


@contextlib.contextmanager
def flow_variant(variant: str) -> Iterator[dict[str, Any]]:
    """FastFlow keyword parameters for a flow implementation; for "index-perm" the project's
    LeanAllInOneBlock is swapped for ``IndexPermutationBlock`` while models are built."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown flow variant {variant!r}; choose from {', '.join(VARIANTS)}")
    import uadflows.methods.fastflow.model as fastflow  # the module whose build_flow picks the block

    if variant != "index-perm":
        yield {"lean_permutation": variant == "lean"}
        return
    import FrEIA.modules as Fm

    class IndexPermutationBlock(fastflow.LeanAllInOneBlock):
        forward = Fm.AllInOneBlock.forward  # FrEIA's coupling; its _permute is the gather

    original = fastflow.LeanAllInOneBlock
    fastflow.LeanAllInOneBlock = IndexPermutationBlock
    try:
        yield {"lean_permutation": True}
    finally:
        fastflow.LeanAllInOneBlock = original


def fastflow_models(backbone: str, image_size: int, variants=VARIANTS, *, build_backbone: bool = False,
                    seed: int = 0, **params: Any) -> dict[str, Any]:
    """One FastFlow per flow variant, all holding the reference model's weights."""
    import numpy as np
    import torch

    from uadflows.methods import create

    models = {}
    for variant in variants:
        torch.manual_seed(seed)
        np.random.seed(seed)  # FrEIA draws its fixed permutations from numpy
        with flow_variant(variant) as kw:
            models[variant] = create("fastflow", backbone=backbone, pretrained=False, image_size=image_size,
                                     build_backbone=build_backbone, **kw, **params)
    first = next(iter(models.values()))
    for model in models.values():
        model.load_state_dict(first.state_dict())
    return models


def make_category(root: Path, image_size: int, n_train: int, n_test: int) -> Path:
    """A tiny MVTec-layout category of noise images at ``image_size`` px (half of the test
    images defective) and its index csv; returns the csv path."""
    from uadflows.data import index_category, write_index
    from uadflows.data.tiny import make_tiny

    if n_train < 1 or n_test < 2:
        raise ValueError(f"make_category: needs n_train >= 1 and n_test >= 2, got {n_train}, {n_test}")
    data = make_tiny("mvtec", root / "data", ("bottle",), size=(image_size, image_size), n_train=n_train,
                     n_test_good=n_test // 2, n_test_defect=n_test - n_test // 2)
    return write_index(index_category("mvtec", data, "bottle"), root / "index" / "bottle.csv")


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def run_part(script: Path, args: list[str], *, env: dict[str, str] | None = None,
             python: str | None = None, timeout: float | None = None) -> dict[str, Any]:
    """Run ``python script args`` in a fresh process (``env`` added to ours, src/ on the
    path) and return the JSON object it prints last."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), full_env.get("PYTHONPATH")]))
    full_env.setdefault("HF_HUB_OFFLINE", "1")
    cmd = [python or sys.executable, str(script), *args]
    proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(cmd)} printed no JSON result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def emit(result: dict[str, Any]) -> None:
    """A part's result: one JSON line on stdout (what run_part reads)."""
    print(json.dumps(result), flush=True)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A Markdown table of ``rows`` (floats to 3 significant digits)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
