"""One training epoch of every model of a config on one category: what a full run would
cost, before paying for it (an estimate, not a result: no scoring, no metrics).

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/epoch_cost.py \
        --config configs/examples/mpdd_metal_plate.yaml --root /work/shared/data \
        --json results/benchmarks/mpdd_epoch_cost.json

Per model: feature extraction seconds (once per extractor), one epoch's training seconds
through the project's ``train``, the config's epochs and their product. Runs the first
dataset's first category of the config (``--root`` replaces that dataset's root).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--root", help="replaces the dataset's root")
    ap.add_argument("--work", default="results/benchmarks/epoch_cost")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from uadflows.config import load_plan, read_config
    from uadflows.data import index_category, write_index
    from uadflows.features import extract
    from uadflows.train import train

    raw = read_config(args.config)
    name, dataset = next(iter(raw["datasets"].items()))
    if args.root:
        dataset["root"] = args.root
    epochs = {}
    for model, m in raw["models"].items():
        if m["method"] != "knn":  # kNN has no epochs: its one pass is what is timed
            epochs[model], m["epochs"], m["checkpoint_every"] = m.get("epochs"), 1, 1
    plan = load_plan(raw, check_roots=True)
    category = plan.runs[0].category
    work = Path(args.work)
    index = work / "index.csv"
    index.parent.mkdir(parents=True, exist_ok=True)
    write_index(index_category(dataset["format"], dataset["root"], category), index)
    rows = []
    for run in [r for r in plan.runs if r.category == category and r.dataset == name]:
        spec = plan.spec(run)
        feats = work / "features" / spec.extractor
        t0 = time.perf_counter()
        if not (feats / "meta.json").is_file():
            extract(index, feats, plan.extractors[(run.dataset, category, spec.extractor)], device="cpu")
        summary = train(spec, feats, work / "runs" / spec.key, index_csv=index)
        one = summary["train_seconds"]
        rows.append({"category": category, "model": run.model, "extract_seconds": round(time.perf_counter() - t0 - one, 1),
                     "one_epoch_seconds": round(one, 1), "config_epochs": epochs.get(run.model),
                     "estimated_train_seconds": round(one * (epochs.get(run.model) or 1))})
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"config": args.config, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
