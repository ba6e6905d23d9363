"""The process environment of the heavy jobs: FastFlow on ResNet18 (256 px, batch 32)
under glibc's default malloc, glibc with the thresholds workflow/rules/common.smk sets,
jemalloc and tcmalloc (LD_PRELOAD). A benchmark, not a test: run it by hand, once.

    PYTHONPATH=src .venv/bin/python benchmarks/speed_allocator.py
    PYTHONPATH=src .venv/bin/python benchmarks/speed_allocator.py --quick   # 64 px, batch 8

Per allocator, a fresh process times training steps from features (forward, backward,
Adam: what ``uadflows.train`` runs) and inference from pixels (backbone, flow, maps: what
extract + score run), and the user and system CPU seconds they took; allocators are run
round-robin ``--rounds`` times and each one's best round is kept. A missing library
(jemalloc: apt libjemalloc2; tcmalloc: apt libtcmalloc-minimal4) is skipped, and said so.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from speed_common import ALLOCATORS, emit, fastflow_models, machine, run_part, table  # noqa: E402


def cpu_seconds() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def measure(size: int, batch: int, steps: int, variant: str) -> dict:
    import torch

    model = fastflow_models("resnet18", size, (variant,), build_backbone=True)[variant]
    x = torch.rand(batch, 3, size, size)
    feats = model.extract(x)
    opt = model.train_setup(1, steps).optimizer

    def train_step() -> None:
        loss = model.loss(model(feats))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer() -> None:
        with torch.inference_mode():
            model.predict(x)

    result = {}
    for name, fn in (("train", train_step), ("inference", infer)):
        model.train(name == "train")
        fn()  # warm-up
        best = float("inf")
        u0, s0 = cpu_seconds()
        for _ in range(steps):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        u1, s1 = cpu_seconds()
        result[name] = {"img_s": batch / best, "user_s": u1 - u0, "sys_s": s1 - s0,
                        "sys_share": (s1 - s0) / max(u1 - u0 + s1 - s0, 1e-9)}
    return {**result, "machine": machine()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="64 px, batch 8, 1 round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="timed calls per process and task")
    p.add_argument("--variant", default="lean", help="flow implementation (freia, index-perm, lean)")
    p.add_argument("--json", type=Path)
    p.add_argument("--part", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    a = p.parse_args()
    if a.quick:
        a.size, a.batch, a.rounds, a.steps = 64, 8, 1, 2
    if a.part:
        emit(measure(a.size, a.batch, a.steps, a.variant))
        return
    available = {k: v for k, v in ALLOCATORS.items() if "LD_PRELOAD" not in v or Path(v["LD_PRELOAD"]).exists()}
    for k in sorted(set(ALLOCATORS) - set(available)):
        print(f"{k}: {ALLOCATORS[k]['LD_PRELOAD']} not installed, skipped", file=sys.stderr)
    runs: dict[str, list[dict]] = {k: [] for k in available}
    args = ["--part", "--size", str(a.size), "--batch", str(a.batch), "--steps", str(a.steps), "--variant", a.variant]
    for _ in range(a.rounds):
        for name, env in available.items():
            runs[name].append(run_part(Path(__file__), args, env=env))
    rows = []
    base = {t: max(r[t]["img_s"] for r in runs["glibc-default"]) for t in ("train", "inference")}
    for name, rs in runs.items():
        row = {"allocator": name}
        for task in ("train", "inference"):
            best = max(rs, key=lambda r: r[task]["img_s"])[task]
            row[f"{task} img/s"] = best["img_s"]
            row[f"{task} vs default"] = best["img_s"] / base[task]
            row[f"{task} system CPU share"] = best["sys_share"]
        rows.append(row)
    print(f"FastFlow / ResNet18 @{a.size}, batch {a.batch}, flow '{a.variant}', best of {a.rounds} rounds")
    print(table(rows, list(rows[0])))
    print("\nmachine:", json.dumps(runs["glibc-default"][0]["machine"]))
    if a.json:
        a.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
