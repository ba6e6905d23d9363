"""Seconds per training epoch of FastFlow: from the feature cache against the backbone in
the loop (the anchors' way). A benchmark, not a test: run it by hand, once.

    PYTHONPATH=src .venv/bin/python benchmarks/speed_epoch.py            # the 4 set-ups
    PYTHONPATH=src .venv/bin/python benchmarks/speed_epoch.py --quick    # ResNet18 at 64 px

Per backbone (each in its own process, random weights, noise images written as an MVTec
category): ``uadflows.features.extract`` writes the real cache (its time and size are
reported); then one "in-loop" pass over the same images runs, per batch, the backbone and
a training step (forward, backward, Adam) of each flow variant (FrEIA's block, the
project's lean block, the candidate block), each part timed; then each variant trains one
epoch from the cache exactly as ``uadflows.train`` does (``FeatureSplit.batches``: fp16
memory map -> float32), ``--reps`` times, interleaved, the minimum kept.

In-loop epoch = backbone seconds + that variant's step seconds (images already decoded in
memory, which favours the in-loop side). An "epoch" is ``--batches`` batches; seconds are
also scaled to MVTec AD's mean category (242 training images), a computed figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from speed_common import (MVTEC_IMAGES, MVTEC_MEAN_TRAIN, TUNED_MALLOC, VARIANTS, emit,  # noqa: E402
                          fastflow_models, interleaved, machine, make_category, run_part, sync, table, timed)

SETUPS = {  # backbone: image size (px)
    "cait_m48_448": 448,
    "deit_base_distilled_patch16_384": 384,
    "resnet18": 256,
    "wide_resnet50_2": 256,
}


def measure(backbone: str, size: int, batches: int, batch_size: int, reps: int, device: str) -> dict:
    import numpy as np
    import torch

    from uadflows.backbones import create_extractor
    from uadflows.data import load_batch, read_index
    from uadflows.features import extract, load_split, resolve_device

    dev = resolve_device(device)
    n = batches * batch_size
    with tempfile.TemporaryDirectory(prefix="speed_epoch_") as tmp:
        index = make_category(Path(tmp), size, n_train=n, n_test=2)
        args = {"name": backbone, "image_size": size, "pretrained": False}
        meta = extract(index, Path(tmp) / "cache", args, batch_size=batch_size, device=device)
        data = load_split(Path(tmp) / "cache", "train")
        samples = [s for s in read_index(index) if s.split == "train"]
        images = [load_batch(samples[i:i + batch_size], (size, size)).to(dev) for i in range(0, n, batch_size)]
        extractor = create_extractor(backbone, image_size=size, pretrained=False).to(dev).eval()
        models = {v: m.to(dev).train() for v, m in fastflow_models(backbone, size, VARIANTS).items()}
        optims = {v: m.train_setup(1, batches).optimizer for v, m in models.items()}

        def step(variant: str, feats: list) -> None:
            model, opt = models[variant], optims[variant]
            loss = model.loss(model(feats))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        # Warm-up (first-call costs: allocator, oneDNN primitives), then the in-loop pass.
        feats0 = extractor(images[0])  # no_grad inside; normal tensors, usable by autograd
        for v in VARIANTS:
            step(v, [f.clone() for f in feats0])
        backbone_s, step_s = 0.0, dict.fromkeys(VARIANTS, 0.0)
        for batch in images:
            holder = {}

            def run_backbone(batch=batch, holder=holder) -> None:
                holder["f"] = extractor(batch)

            backbone_s += timed(run_backbone, dev)
            for v in VARIANTS:
                feats = [f.clone() for f in holder["f"]]  # each variant its own copy
                step_s[v] += timed(lambda v=v, feats=feats: step(v, feats), dev)
        del extractor

        def cached_epoch(variant: str, epoch: int = 0) -> None:
            order = np.random.default_rng([0, epoch]).permutation(len(data))
            for _, feats in data.batches(batch_size, order, dev):
                step(variant, feats)

        def read_epoch() -> None:
            order = np.random.default_rng([0, 1]).permutation(len(data))
            for _, feats in data.batches(batch_size, order, dev):
                sync(dev)

        cached = interleaved({**{v: (lambda v=v: cached_epoch(v)) for v in VARIANTS}, "read only": read_epoch},
                             reps, dev, warmup=False)
    per_image_bytes = meta["bytes"] / (n + 2)
    result = {
        "backbone": backbone, "image_size": size, "batch_size": batch_size, "batches": batches,
        "images": n, "extract_s": meta["seconds"], "cache_bytes": meta["bytes"],
        "cache_mb_per_image": per_image_bytes / 2**20,
        "cache_gb_mvtec_computed": per_image_bytes * MVTEC_IMAGES / 2**30,
        "backbone_s_per_batch": backbone_s / batches, "read_s_per_epoch": cached["read only"]["min"],
        "variants": {},
    }
    for v in VARIANTS:
        in_loop = backbone_s + step_s[v]
        result["variants"][v] = {
            "step_s_per_batch": step_s[v] / batches, "in_loop_s": in_loop,
            "cached_s": cached[v]["min"], "cached_median_s": cached[v]["median"],
            "ratio": in_loop / cached[v]["min"],
        }
    # The anchors' way (FrEIA's flow, backbone in the loop) against ours (cache + lean flow).
    result["anchors_vs_candidate"] = (backbone_s + step_s["freia"]) / cached["candidate"]["min"]
    result["anchors_vs_lean"] = (backbone_s + step_s["freia"]) / cached["lean"]["min"]
    result["machine"] = machine()
    return result


def report(results: list[dict]) -> str:
    rows = []
    for r in results:
        scale = MVTEC_MEAN_TRAIN / r["images"]
        for v, d in r["variants"].items():
            rows.append({
                "backbone": f"{r['backbone']} @{r['image_size']}", "flow": v,
                "backbone s/batch": r["backbone_s_per_batch"], "flow step s/batch": d["step_s_per_batch"],
                "in-loop s/epoch": d["in_loop_s"], "cached s/epoch": d["cached_s"],
                "ratio": d["ratio"], "in-loop s/MVTec epoch": d["in_loop_s"] * scale,
                "cached s/MVTec epoch": d["cached_s"] * scale,
            })
    cols = list(rows[0])
    cache_rows = [{"backbone": f"{r['backbone']} @{r['image_size']}", "extract s": r["extract_s"],
                   "images": r["images"] + 2, "cache MB/image": r["cache_mb_per_image"],
                   "cache GB, all of MVTec AD (computed)": r["cache_gb_mvtec_computed"],
                   "read s/epoch": r["read_s_per_epoch"],
                   "anchors (FrEIA in loop) / lean from cache": r["anchors_vs_lean"],
                   "anchors / candidate from cache": r["anchors_vs_candidate"]} for r in results]
    return table(rows, cols) + "\n\n" + table(cache_rows, list(cache_rows[0]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="ResNet18 at 64 px, 2 batches of 4 (smoke run)")
    p.add_argument("--backbones", nargs="+", choices=sorted(SETUPS), help="default: all four")
    p.add_argument("--batches", type=int, default=4, help="batches per epoch (default 4)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--reps", type=int, default=2, help="cached epochs per variant (minimum kept)")
    p.add_argument("--device", default="auto")
    p.add_argument("--default-malloc", action="store_true", help="glibc's default malloc settings")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--part", help=argparse.SUPPRESS)  # internal: one backbone, JSON out
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.part:
        emit(measure(a.part, a.size or SETUPS[a.part], a.batches, a.batch_size, a.reps, a.device))
        return
    if a.quick:
        plan, a.batches, a.batch_size, a.reps = {"resnet18": 64}, 2, 4, 1
    else:
        plan = {b: SETUPS[b] for b in (a.backbones or SETUPS)}
    env = {} if a.default_malloc else TUNED_MALLOC
    results = []
    for backbone, size in plan.items():
        t0 = time.perf_counter()
        r = run_part(Path(__file__), ["--part", backbone, "--size", str(size), "--batches", str(a.batches),
                                      "--batch-size", str(a.batch_size), "--reps", str(a.reps),
                                      "--device", a.device], env=env)
        print(f"{backbone}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        results.append(r)
    print(report(results))
    print("\nmachine:", json.dumps(results[0]["machine"]))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
