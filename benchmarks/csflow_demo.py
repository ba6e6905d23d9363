"""CS-Flow on the demo categories at the demo config, with FastFlow's demo config trained
side by side on the same data as the timing control. A benchmark, not a test: run it by hand.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/csflow_demo.py --json out.json

Per category: the demo data (seed 0, 128 px, as ``make demo``), both feature caches, then
train, score and evaluate each model with the pipeline's own functions. Writes per model
and category image/pixel AUROC, AU-PRO, training seconds and trainable parameters; the
Markdown table in docs/methods/csflow.md is rendered from that JSON (``--table``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from speed_common import table  # noqa: E402

ROOT = HERE.parent
MODELS = ("csflow-effnet", "fastflow-effnet")  # csflow measured, fastflow the control
COLUMNS = ["model", "category", "image_auroc", "pixel_auroc", "au_pro", "train_seconds", "extract_seconds", "flow_params"]


def demo_models(names=MODELS) -> dict:
    """The models exactly as config.yaml's demo defines them."""
    models = yaml.safe_load((ROOT / "config.yaml").read_text())["models"]
    return {name: models[name] for name in names}


def job_spec(name: str, category: str):
    """The demo plan's own job spec of this model and category, on the CPU."""
    from uadflows.config import load_plan, read_config

    plan = load_plan(read_config(ROOT / "config.yaml"), check_roots=False)
    run = next(r for r in plan.runs if r.model == name and r.category == category)
    return plan.spec(run).model_copy(update={"device": "cpu"})


def run(work: Path, categories: list[str], names=MODELS) -> list[dict]:
    from uadflows.data import index_category, write_index
    from uadflows.data.demo import make_demo
    from uadflows.evaluate import evaluate
    from uadflows.features import extract
    from uadflows.score import score
    from uadflows.train import train

    root = make_demo(work / "demo", tuple(categories), seed=0, image_size=128)
    rows = []
    for category in categories:
        index = work / "index" / f"{category}.csv"
        write_index(index_category("demo", root, category), index)
        for name, m in demo_models(names).items():
            cache = work / "features" / category / name
            t0 = time.perf_counter()
            extract(index, cache, {"name": m["backbone"], "image_size": m["image_size"], "pretrained": True},
                    batch_size=16, device="cpu")
            extract_s = time.perf_counter() - t0
            out = work / "runs" / category / name
            spec = job_spec(name, category)
            summary = train(spec, cache, out, index_csv=index)
            spec.save(out / "spec.json")
            score(out / "model.pt", cache, out / "scores.npz", device="cpu", index_csv=index)
            result = evaluate(out / "spec.json", out / "summary.json", out / "scores.npz", out / "metrics.json")
            metrics = result.get("metrics", {})
            rows.append({
                "model": name, "category": category, "status": result["status"],
                "image_auroc": metrics.get("image_auroc"), "pixel_auroc": metrics.get("pixel_auroc"),
                "au_pro": metrics.get("au_pro"), "train_seconds": summary["train_seconds"],
                "extract_seconds": extract_s, "epochs": summary["epochs"], "flow_params": summary["flow_params"],
            })
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument("--table", type=Path, help="only render the Markdown table of a JSON written before")
    ap.add_argument("--categories", nargs="+", default=["brick", "grass", "gravel"])
    ap.add_argument("--models", nargs="+", default=list(MODELS), help="config.yaml demo models")
    ap.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    a = ap.parse_args()
    if a.table:
        print(table(json.loads(a.table.read_text())["rows"], COLUMNS))
        return
    import torch

    torch.set_num_threads(1)
    if a.work:
        rows = run(a.work, a.categories, a.models)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rows = run(Path(tmp), a.categories, a.models)
    out = {"config": demo_models(a.models), "rows": rows}
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")
    print(table(rows, COLUMNS))


if __name__ == "__main__":
    main()
