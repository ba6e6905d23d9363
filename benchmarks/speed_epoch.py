"""Seconds per training epoch of FastFlow: from the feature cache against the backbone in
the loop (the anchors' way). A benchmark, not a test: run it by hand, once.

    PYTHONPATH=src .venv/bin/python benchmarks/speed_epoch.py            # the 4 set-ups
    PYTHONPATH=src .venv/bin/python benchmarks/speed_epoch.py --quick    # ResNet18 at 64 px

Per backbone (its own process, random weights, noise images in MVTec's layout):
``uadflows.features.extract`` writes the real cache of one batch (time and size reported);
then, for each timed batch, round-robin: the backbone on the images (already decoded in
memory, which favours the in-loop side), the cache read as ``uadflows.train`` reads it
(``FeatureSplit.batch``: fp16 memory map -> float32), and one training step (forward,
backward, Adam) of each flow variant: FrEIA's block, FrEIA's block with the project's
index permutation only, the project's lean block. Interleaving every part batch by batch
keeps the machine's changing load out of the ratios.

    in-loop epoch = backbone + step,   cached epoch = read + step   (per variant)

in wall seconds and in process CPU seconds (less sensitive to other jobs on a shared
machine). Seconds are scaled to MVTec AD's mean category (242 training images), a
computed figure; the ratio does not depend on the scaling.
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
                          fastflow_models, machine, make_category, run_part, sync, table)

SETUPS = {  # backbone: image size (px)
    "cait_m48_448": 448,
    "deit_base_distilled_patch16_384": 384,
    "resnet18": 256,
    "wide_resnet50_2": 256,
}


def measure(backbone: str, size: int, batches: int, batch_size: int, device: str) -> dict:
    import numpy as np

    from uadflows.backbones import create_extractor
    from uadflows.data import load_batch, read_index
    from uadflows.features import extract, load_split, resolve_device

    dev = resolve_device(device)
    with tempfile.TemporaryDirectory(prefix="speed_epoch_") as tmp:
        # One batch of images, cached once; every timed batch reads it again (a batch's read
        # costs the same wherever it sits in a memory-mapped file already in the page cache).
        index = make_category(Path(tmp), size, n_train=batch_size, n_test=2)
        args = {"name": backbone, "image_size": size, "pretrained": False}
        meta = extract(index, Path(tmp) / "cache", args, batch_size=batch_size, device=device)
        data = load_split(Path(tmp) / "cache", "train")
        samples = [s for s in read_index(index) if s.split == "train"]
        images = load_batch(samples, (size, size)).to(dev)
        extractor = create_extractor(backbone, image_size=size, pretrained=False).to(dev).eval()
        models = {v: m.to(dev).train() for v, m in fastflow_models(backbone, size, VARIANTS).items()}
        optims = {v: m.train_setup(1, batches).optimizer for v, m in models.items()}

        def step(variant: str, feats: list) -> None:
            model, opt = models[variant], optims[variant]
            loss = model.loss(model(feats))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        # Warm-up (first-call costs: allocator, oneDNN primitives), untimed.
        extractor(images[:1])
        for v in VARIANTS:
            step(v, data.batch(slice(0, batch_size), dev))
        # Per batch, round-robin: the backbone on the images (in-loop), the cache read
        # (FeatureSplit.batch, as uadflows.train reads: fp16 map -> float32), and one
        # training step of every variant on the features read.
        wall = {"backbone": 0.0, "read": 0.0, **dict.fromkeys(VARIANTS, 0.0)}
        cpu = dict.fromkeys(wall, 0.0)
        rng = np.random.default_rng(0)
        holder: dict = {}

        def run(name: str, fn) -> None:
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            sync(dev)
            wall[name] += time.perf_counter() - t0
            cpu[name] += time.process_time() - c0

        for _ in range(batches):
            run("backbone", lambda: extractor(images))
            idx = rng.permutation(batch_size)
            run("read", lambda idx=idx: holder.__setitem__("f", data.batch(idx, dev)))
            for v in VARIANTS:
                feats = [f.clone() for f in holder["f"]]  # each variant its own copy
                run(v, lambda v=v, feats=feats: step(v, feats))
    n = batches * batch_size
    per_image_bytes = meta["bytes"] / (batch_size + 2)
    result = {
        "backbone": backbone, "image_size": size, "batch_size": batch_size, "batches": batches,
        "images": n, "extract_s": meta["seconds"], "extract_images": batch_size + 2,
        "cache_mb_per_image": per_image_bytes / 2**20,
        "cache_gb_mvtec_computed": per_image_bytes * MVTEC_IMAGES / 2**30,
        "backbone_s_per_batch": wall["backbone"] / batches, "read_s_per_batch": wall["read"] / batches,
        "backbone_cpu_s_per_batch": cpu["backbone"] / batches, "read_cpu_s_per_batch": cpu["read"] / batches,
        "variants": {},
    }
    for v in VARIANTS:
        d = {"step_s_per_batch": wall[v] / batches, "step_cpu_s_per_batch": cpu[v] / batches}
        for kind, t in (("wall", wall), ("cpu", cpu)):
            d[f"in_loop_{kind}_s"] = t["backbone"] + t[v]
            d[f"cached_{kind}_s"] = t["read"] + t[v]
            d[f"ratio_{kind}"] = d[f"in_loop_{kind}_s"] / d[f"cached_{kind}_s"]
        result["variants"][v] = d
    # The anchors' way (FrEIA's flow, backbone in the loop) against ours (cache + lean flow).
    for kind, t in (("wall", wall), ("cpu", cpu)):
        for v in ("index-perm", "lean"):
            result[f"anchors_vs_{v}_{kind}"] = (t["backbone"] + t["freia"]) / (t["read"] + t[v])
    result["machine"] = machine()
    return result


def report(results: list[dict]) -> str:
    rows = []
    for r in results:
        scale = MVTEC_MEAN_TRAIN / r["images"]
        for v, d in r["variants"].items():
            rows.append({
                "backbone": f"{r['backbone']} @{r['image_size']}", "flow": v,
                "backbone s/batch": r["backbone_s_per_batch"], "read s/batch": r["read_s_per_batch"],
                "flow step s/batch": d["step_s_per_batch"],
                "in-loop s/MVTec epoch": d["in_loop_wall_s"] * scale, "cached s/MVTec epoch": d["cached_wall_s"] * scale,
                "ratio (wall)": d["ratio_wall"], "ratio (CPU time)": d["ratio_cpu"],
            })
    cache_rows = [{"backbone": f"{r['backbone']} @{r['image_size']}", "timed batches": f"{r['batches']} x {r['batch_size']}",
                   "extract s": r["extract_s"], "images extracted": r["extract_images"],
                   "cache MB/image": r["cache_mb_per_image"],
                   "cache GB, all of MVTec AD (computed)": r["cache_gb_mvtec_computed"],
                   "FrEIA in loop / index-perm cached (wall)": r["anchors_vs_index-perm_wall"],
                   "FrEIA in loop / lean cached (wall)": r["anchors_vs_lean_wall"],
                   "FrEIA in loop / lean cached (CPU)": r["anchors_vs_lean_cpu"]} for r in results]
    return table(rows, list(rows[0])) + "\n\n" + table(cache_rows, list(cache_rows[0]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="ResNet18 at 64 px, 2 batches of 4 (smoke run)")
    p.add_argument("--backbones", nargs="+", choices=sorted(SETUPS), help="default: all four")
    p.add_argument("--batches", type=int, default=0, help="timed batches (default 4; CaiT 2)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--default-malloc", action="store_true", help="glibc's default malloc settings")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--part", help=argparse.SUPPRESS)  # internal: one backbone, JSON out
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.part:
        emit(measure(a.part, a.size or SETUPS[a.part], a.batches, a.batch_size, a.device))
        return
    if a.quick:
        plan, a.batches, a.batch_size = {"resnet18": 64}, 2, 4
    else:
        plan = {b: SETUPS[b] for b in (a.backbones or SETUPS)}
    env = {} if a.default_malloc else TUNED_MALLOC
    results = []
    for backbone, size in plan.items():
        t0 = time.perf_counter()
        batches = a.batches or (2 if backbone == "cait_m48_448" else 4)
        r = run_part(Path(__file__), ["--part", backbone, "--size", str(size), "--batches", str(batches),
                                      "--batch-size", str(a.batch_size), "--device", a.device], env=env)
        print(f"{backbone}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        results.append(r)
    print(report(results))
    print("\nmachine:", json.dumps(results[0]["machine"]))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
