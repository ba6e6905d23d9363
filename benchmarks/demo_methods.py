"""Some of config.yaml's demo models on the demo categories, through the project's own
train -> score -> evaluate, timed. A measurement, not a test: run it in the background.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/demo_methods.py \
        --models cflow-effnet knn-effnet --json results/benchmarks/demo_methods.json

Each model keeps exactly its config.yaml entry (epochs, batch size, lr, params); the demo
data, index and feature cache are built as ``make demo`` builds them (config.yaml's demo
dataset settings) under ``--work``. Per (category, model): train seconds, score seconds,
image and pixel AUROC, AU-PRO, trainable parameters.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


COLUMNS = ("category", "model", "epochs", "train_seconds", "score_seconds", "flow_params",
           "image_auroc", "pixel_auroc", "au_pro")


def table(rows: list[dict]) -> str:
    """Markdown table of result rows (AUROC and AU-PRO in percent); a seed column when the
    rows say their seed."""
    columns = COLUMNS[:2] + ("seed",) + COLUMNS[2:] if any("seed" in r for r in rows) else COLUMNS
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "-")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    ap.add_argument("--models", nargs="+", help="model names of the config")
    ap.add_argument("--render", nargs="+", metavar="JSON", help="print the markdown table of these outputs, run nothing")
    ap.add_argument("--categories", nargs="+", default=None, help="default: the demo's all")
    ap.add_argument("--seeds", nargs="+", type=int, help="instead of the config's seeds")
    ap.add_argument("--work", default="results/benchmarks/demo_methods")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.render:
        print(table([row for f in args.render for row in json.loads(Path(f).read_text())["rows"]]))
        return 0
    if not args.models or not args.json:
        ap.error("--models and --json are needed to run (or --render to print a table)")

    from uadflows.config import load_plan, read_config
    from uadflows.data import index_category, write_index
    from uadflows.data.demo import CATEGORIES, make_demo
    from uadflows.evaluate import evaluate
    from uadflows.features import extract
    from uadflows.score import score
    from uadflows.train import train

    raw = read_config(args.config)
    if args.seeds:
        raw["seeds"] = args.seeds
    unknown = [m for m in args.models if m not in raw["models"]]
    if unknown:
        ap.error(f"{args.config}: no model(s) {unknown}; it has {sorted(raw['models'])}")
    plan = load_plan(raw, check_roots=False)
    dataset = plan.datasets["demo"]
    work = Path(args.work)
    categories = args.categories or list(CATEGORIES)
    root = make_demo(work / "data", categories, **dataset.demo.model_dump(exclude_none=True))
    rows = []
    for category in categories:
        index = work / "index" / f"{category}.csv"
        write_index(index_category("demo", root, category), index)
        for run in [r for r in plan.runs if r.category == category and r.model in args.models]:
            spec = plan.spec(run)
            feats = work / "features" / category / spec.extractor
            if not (feats / "meta.json").is_file():
                extract(index, feats, plan.extractors[(run.dataset, category, spec.extractor)], device="cpu")
            out = work / "runs" / spec.key
            summary = train(spec, feats, out, index_csv=index)
            t0 = time.perf_counter()
            score(out / "model.pt", feats, out / "scores.npz", device="cpu", index_csv=index)
            score_s = time.perf_counter() - t0
            spec.save(out / "spec.json")
            m = evaluate(out / "spec.json", out / "summary.json", out / "scores.npz", out / "metrics.json")["metrics"]
            row = {"category": category, "model": run.model, "seed": spec.seed, "method": spec.method,
                   "epochs": summary["epochs"], "train_seconds": round(summary["train_seconds"], 2),
                   "score_seconds": round(score_s, 2), "flow_params": summary["flow_params"],
                   **{k: round(100 * m[k], 2) for k in ("image_auroc", "pixel_auroc", "au_pro")}}
            rows.append(row)
            print(json.dumps(row), flush=True)
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)  # after every run: partial results survive
            Path(args.json).write_text(json.dumps({"config": args.config, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
