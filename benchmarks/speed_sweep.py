"""A three-method sweep (FastFlow, MSFlow, U-Flow) on one category: one shared feature
cache against each method running its own backbone. A benchmark, not a test: run it once.

    PYTHONPATH=src .venv/bin/python benchmarks/speed_sweep.py           # WRN50 @256, 2 epochs
    PYTHONPATH=src .venv/bin/python benchmarks/speed_sweep.py --quick   # ResNet18 @64, 1 epoch

The three methods share one backbone and resolution (``--backbone``, ``--size``) so that
they can share a cache; each keeps its own recipe otherwise (flows, batch size given by
``--batch-size``, schedule), random weights, seed 0, ``--epochs`` epochs, on a category
of noise images in MVTec's layout (``--train`` / ``--test`` images).

shared: ``uadflows.features.extract`` once, then for each method ``uadflows.train.train``
and ``uadflows.score.score`` from that cache (the project's pipeline, checkpoints and
score files included).
own: for each method, the anchors' loop: every batch of every epoch is read from disk,
decoded, run through the backbone and then the flow (same optimiser, schedule and gradient
clipping as ``train``); at test time the same, the maps written to an npz as ``score`` does.
Each path runs in its own process; both read the same files.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from speed_common import TUNED_MALLOC, emit, machine, make_category, peak_rss_mb, run_part, table  # noqa: E402

METHODS = ("fastflow", "msflow", "uflow")


PARAMS: dict[str, dict] = {}  # per-method recipe overrides (--params)


def job_spec(method: str, backbone: str, size: int, epochs: int, batch_size: int) -> dict:
    """A job spec as uadflows.config.Plan.spec writes it."""
    return {
        "sweep": "speed", "dataset": "noise", "format": "mvtec", "category": "bottle", "model": method,
        "method": method, "backbone": backbone, "seed": 0, "image_size": [size, size], "pretrained": False,
        "weights_file": None, "extractor": "shared", "params": dict(PARAMS.get(method, {})),
        "train": {"epochs": epochs, "batch_size": batch_size, "lr": None, "checkpoint_every": 10},
        "evaluation": {"resolution": "original", "pro_limit": 0.3}, "device": "cpu", "protocol": "last-epoch",
    }


def preload() -> None:
    """Import every heavy module before a clock starts (imports are not what we compare)."""
    import importlib

    for name in ("timm", "uadflows.backbones", "uadflows.data", *(f"uadflows.methods.{m}" for m in METHODS)):
        importlib.import_module(name)


def shared_cache(work: Path, index: Path, backbone: str, size: int, epochs: int, batch_size: int) -> dict:
    from uadflows.features import extract
    from uadflows.score import score
    from uadflows.train import train

    t_all = time.perf_counter()
    t0 = time.perf_counter()
    meta = extract(index, work / "cache", {"name": backbone, "image_size": size, "pretrained": False},
                   batch_size=batch_size, device="cpu")
    parts = {"extract": time.perf_counter() - t0}
    for method in METHODS:
        out = work / "runs" / method
        t0 = time.perf_counter()
        summary = train(job_spec(method, backbone, size, epochs, batch_size), work / "cache", out, index_csv=index)
        if summary["status"] != "ok":
            raise RuntimeError(f"{method}: training failed: {summary.get('error')}")
        parts[f"{method} train"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        score(out / "model.pt", work / "cache", out / "scores.npz", device="cpu", index_csv=index)
        parts[f"{method} score"] = time.perf_counter() - t0
    return {"total_s": time.perf_counter() - t_all, "parts_s": parts, "cache_bytes": meta["bytes"]}


def own_backbone(work: Path, index: Path, backbone: str, size: int, epochs: int, batch_size: int) -> dict:
    import numpy as np
    import torch

    from uadflows.backbones import create_extractor
    from uadflows.data import load_batch, read_index
    from uadflows.train import build_model, optimizer_step

    samples = read_index(index)
    train_set = [s for s in samples if s.split == "train"]
    test_set = [s for s in samples if s.split == "test"]
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    parts = {}
    for method in METHODS:
        t0 = time.perf_counter()
        spec = job_spec(method, backbone, size, epochs, batch_size)
        model = build_model(spec)  # seeds, recipe, weightless backbone stand-in ...
        model.backbone = create_extractor(backbone, image_size=size, pretrained=False)  # ... the real one
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        steps = math.ceil(len(train_set) / batch_size)
        setup = model.train_setup(epochs, steps)
        for epoch in range(epochs):
            model.train()
            order = np.random.default_rng([spec["seed"], epoch]).permutation(len(train_set))
            for start in range(0, len(order), batch_size):
                images = load_batch([train_set[i] for i in sorted(order[start:start + batch_size])], (size, size))
                optimizer_step(model, setup, model.loss(model(model.extract(images))))
            if setup.scheduler is not None and setup.scheduler_interval == "epoch":
                setup.scheduler.step()
        parts[f"{method} train"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.eval()
        maps: dict[str, list[np.ndarray]] = {}
        with torch.inference_mode():
            for start in range(0, len(test_set), batch_size):
                images = load_batch(test_set[start:start + batch_size], (size, size))
                out = model.anomaly_maps(model(model.extract(images), with_log_jac=False), (size, size))
                for k, v in out.items():
                    maps.setdefault(k, []).append(v.float().numpy())
        np.savez(work / f"{method}_scores.npz", **{k: np.concatenate(v) for k, v in maps.items()})
        parts[f"{method} score"] = time.perf_counter() - t0
    return {"total_s": time.perf_counter() - t_all, "parts_s": parts}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="ResNet18 at 64 px, 1 epoch, 4 + 2 images")
    p.add_argument("--backbone", default="wide_resnet50_2")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--train", type=int, default=16, help="training images")
    p.add_argument("--test", type=int, default=8, help="test images (half defective)")
    p.add_argument("--params", type=json.loads, default={},
                   help='per-method overrides, JSON, e.g. \'{"msflow": {"blocks_per_scale": [5, 8]}}\' '
                        "(MSFlow's recipe has 3 scales; ms_cait gives 2)")
    p.add_argument("--json", type=Path)
    p.add_argument("--part", choices=["shared", "own"], help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.quick:
        a.backbone, a.size, a.epochs, a.batch_size, a.train, a.test = "resnet18", 64, 1, 4, 4, 2
    bad = sorted(set(a.params) - set(METHODS))
    if bad or not all(isinstance(v, dict) for v in a.params.values()):
        raise SystemExit(f"--params: a JSON object of method -> parameters, methods {', '.join(METHODS)}; got {a.params}")
    PARAMS.update(a.params)
    if a.part:
        index = a.work / "index" / "bottle.csv"
        run = shared_cache if a.part == "shared" else own_backbone
        preload()
        result = run(a.work / a.part, index, a.backbone, a.size, a.epochs, a.batch_size)
        emit({**result, "peak_rss_mb": peak_rss_mb(), "machine": machine()})
        return
    args = ["--backbone", a.backbone, "--size", str(a.size), "--epochs", str(a.epochs),
            "--batch-size", str(a.batch_size), "--params", json.dumps(a.params)]
    with tempfile.TemporaryDirectory(prefix="speed_sweep_") as tmp:
        make_category(Path(tmp), a.size, a.train, a.test)
        results = {}
        for part in ("shared", "own"):
            results[part] = run_part(Path(__file__), ["--part", part, "--work", tmp, *args], env=TUNED_MALLOC)
            print(f"{part}: {results[part]['total_s']:.0f} s", file=sys.stderr, flush=True)
    shared, own = results["shared"], results["own"]
    extract_s = shared["parts_s"]["extract"]
    rows = [{"path": "shared cache (1 extraction)", "total s": shared["total_s"], "ratio": own["total_s"] / shared["total_s"]},
            {"path": "each method its own cache (computed: + 2 extractions)",
             "total s": shared["total_s"] + 2 * extract_s, "ratio": own["total_s"] / (shared["total_s"] + 2 * extract_s)},
            {"path": "each method its own backbone in the loop", "total s": own["total_s"], "ratio": 1.0}]
    print(f"sweep: {', '.join(METHODS)} on {a.backbone} @{a.size} px, {a.train} train + {a.test} test images, "
          f"{a.epochs} epochs, batch {a.batch_size}, params {json.dumps(a.params)}")
    print(table(rows, list(rows[0])) + "\n")
    steps = sorted(set(shared["parts_s"]) | set(own["parts_s"]), key=lambda k: (k != "extract", k))
    print(table([{"step": k, "shared s": shared["parts_s"].get(k), "own s": own["parts_s"].get(k)} for k in steps],
                ["step", "shared s", "own s"]))
    print(f"\ncache: {shared['cache_bytes'] / 2**20:.1f} MB; peak RSS shared {shared['peak_rss_mb']:.0f} MB, "
          f"own {own['peak_rss_mb']:.0f} MB")
    print("machine:", json.dumps(shared["machine"]))
    if a.json:
        a.json.write_text(json.dumps({"args": vars(a) | {"json": str(a.json)}, **results}, indent=1, default=str))


if __name__ == "__main__":
    main()
