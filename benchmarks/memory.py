"""Peak memory of extracting, training and evaluating one category (RSS, and allocated
GPU memory on a GPU). A benchmark, not a test: run it by hand, once.

    PYTHONPATH=src .venv/bin/python benchmarks/memory.py           # 5 set-ups, 32 + 16 images
    PYTHONPATH=src .venv/bin/python benchmarks/memory.py --quick   # FastFlow/ResNet18 @64

Every stage runs in its own process, so its peak is its own: ``extract`` (the backbone
over the category, the cache written), ``train`` (``uadflows.train.train``, 1 epoch, the
recipe's batch size, from the cache), ``evaluate`` (``uadflows.score.score`` then
``uadflows.evaluate.evaluate``). The peak resident set size includes Python, torch and
the pages of the memory-mapped cache read so far (file-backed pages the kernel can drop).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from speed_common import TUNED_MALLOC, emit, machine, make_category, peak_rss_mb, run_part, table  # noqa: E402

SETUPS = [  # (method, backbone, image size)
    ("fastflow", "resnet18", 256),
    ("fastflow", "wide_resnet50_2", 256),
    ("fastflow", "deit_base_distilled_patch16_384", 384),
    ("msflow", "wide_resnet50_2", 256),
    ("uflow", "wide_resnet50_2", 256),
]


def spec(method: str, backbone: str, size: int, device: str):
    """One epoch at the method's recipe batch size and learning rate."""
    from uadflows.methods import recipe
    from uadflows.spec import JobSpec, TrainOptions

    r = recipe(method)
    return JobSpec(
        sweep="memory", dataset="noise", format="mvtec", category="bottle", model=method, method=method,
        backbone=backbone, seed=0, image_size=(size, size), pretrained=False, extractor="x", device=device,
        train=TrainOptions(epochs=1, batch_size=r["batch_size"], lr=r["lr"]),
    )


def stage(name: str, work: Path, method: str, backbone: str, size: int, device: str) -> dict:
    import torch

    from uadflows.features import extract, resolve_device

    index = work / "index" / "bottle.csv"
    cache = work / f"cache_{backbone}_{size}"
    run = work / "runs" / f"{method}_{backbone}"
    if name == "extract":
        extract(index, cache, {"name": backbone, "image_size": size, "pretrained": False}, batch_size=8, device=device)
    elif name == "train":
        from uadflows.train import train

        s = spec(method, backbone, size, device)
        s.save(run / "spec.json")
        summary = train(s, cache, run, index_csv=index)
        if summary["status"] != "ok":
            raise RuntimeError(f"{method}/{backbone}: training failed: {summary['error']}")
    else:
        from uadflows.evaluate import evaluate
        from uadflows.score import score

        score(run / "model.pt", cache, run / "scores.npz", device=device, index_csv=index)
        evaluate(run / "spec.json", run / "summary.json", run / "scores.npz", run / "metrics.json")
    dev = resolve_device(device)
    gpu = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    return {"peak_rss_mb": peak_rss_mb(), "peak_gpu_allocated_mb": gpu, "machine": machine()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="FastFlow on ResNet18 at 64 px, 8 + 4 images")
    p.add_argument("--train", type=int, default=32, help="training images")
    p.add_argument("--test", type=int, default=16, help="test images")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path)
    p.add_argument("--part", help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.part:
        name, method, backbone, size = a.part.split(":")
        emit(stage(name, a.work, method, backbone, int(size), a.device))
        return
    setups = [("fastflow", "resnet18", 64)] if a.quick else SETUPS
    if a.quick:
        a.train, a.test = 8, 4
    rows, sizes_done = [], set()
    with tempfile.TemporaryDirectory(prefix="memory_") as tmp:
        work = Path(tmp)
        index_sizes = {s for _, _, s in setups}
        for size in sorted(index_sizes):
            make_category(work / f"px{size}", size, a.train, a.test)
        for method, backbone, size in setups:
            sub = work / f"px{size}"
            row = {"method": method, "backbone": f"{backbone} @{size}"}
            stages = ["train", "evaluate"]
            if (backbone, size) not in sizes_done:
                stages.insert(0, "extract")
                sizes_done.add((backbone, size))
            for name in stages:
                r = run_part(Path(__file__), ["--part", f"{name}:{method}:{backbone}:{size}", "--work", str(sub),
                                              "--device", a.device], env=TUNED_MALLOC)
                row[f"{name} RSS MB"] = r["peak_rss_mb"]
                if r["peak_gpu_allocated_mb"] is not None:
                    row[f"{name} GPU MB"] = r["peak_gpu_allocated_mb"]
                print(f"{method} {backbone} {name}: {r['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
            rows.append(row)
    cols = list(dict.fromkeys(c for r in rows for c in r))
    print(f"one category: {a.train} train + {a.test} test images, 1 epoch at the recipe's batch size")
    print(table(rows, cols))
    print("\nmachine:", json.dumps(r["machine"]))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
