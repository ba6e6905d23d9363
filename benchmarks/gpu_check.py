"""The parts of benchmarks/gpu_check.sh that need no GPU: the variant configs and the
summary of their runs (tested on CPU by tests/test_gpu_check.py).

    python benchmarks/gpu_check.py config VARIANT OUT.yaml      # base | amp | amp+compile
    python benchmarks/gpu_check.py report DIR... [--json FILE]  # one workflow folder per variant

Per method (mean over the demo's categories): training images/s (train images x epochs /
train seconds), scoring images/s (test images / flow seconds, as metrics.json's cost),
peak GPU memory (MiB, training), and the largest change of any metric between a variant
and ``base`` in points (x100); AMP changes the metrics when that exceeds 0.5.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"base": (False, False), "amp": (True, False), "amp+compile": (True, True)}
TOLERANCE_POINTS = 0.5


def variant_config(variant: str, demo: Path = ROOT / "config.yaml") -> dict:
    """The demo config on CUDA with this variant's ``amp`` / ``compile``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r}: not one of {', '.join(VARIANTS)}")
    amp, compile_ = VARIANTS[variant]
    config = yaml.safe_load(demo.read_text())
    config.update(device="cuda", sweep=f"gpu-{variant.replace('+', '-')}")
    for model in config["models"].values():
        model.update(amp=amp, compile=compile_)
    return config


def _train_images(index_csv: Path) -> int:
    with index_csv.open() as f:
        return sum(row["split"] == "train" for row in csv.DictReader(f))


def run_rows(workdir: Path) -> list[dict]:
    """One row per run of a finished workflow folder (its config's results)."""
    results = workdir / yaml.safe_load((workdir / "config.yaml").read_text()).get("results", "results")
    rows = []
    for metrics_json in sorted((results / "runs").glob("*/*/*/seed*/metrics.json")):
        run = metrics_json.parent
        m, summary = json.loads(metrics_json.read_text()), json.loads((run / "summary.json").read_text())
        if m.get("status") != "ok":
            raise ValueError(f"{metrics_json}: status {m.get('status')!r} ({m.get('error')})")
        key = m["key"]
        n_train = _train_images(results / "index" / key["dataset"] / f"{key['category']}.csv")
        rows.append({
            "model": key["model"], "category": key["category"],
            "train_images_per_s": n_train * summary["epochs"] / summary["train_seconds"],
            "score_images_per_s": m["cost"]["infer_images_per_s"],
            "peak_gpu_mb": summary.get("peak_gpu_mb"), "metrics": m["metrics"],
        })
    if not rows:
        raise ValueError(f"{results}: no runs/*/*/*/seed*/metrics.json (did the workflow finish?)")
    return rows


def summarize(variants: dict[str, list[dict]]) -> list[dict]:
    """Per variant and model: mean speeds, peak memory, and the largest metric change
    (points) against the same model and category in ``base``."""
    base = {(r["model"], r["category"]): r["metrics"] for r in variants.get("base", [])}
    out = []
    for variant, rows in variants.items():
        for model in sorted({r["model"] for r in rows}):
            mine = [r for r in rows if r["model"] == model]
            deltas = [100 * abs(r["metrics"][k] - base[(model, r["category"])][k])
                      for r in mine if (model, r["category"]) in base
                      for k in r["metrics"] if isinstance(r["metrics"][k], (int, float))
                      and isinstance(base[(model, r["category"])].get(k), (int, float))]
            gpu = [r["peak_gpu_mb"] for r in mine if r["peak_gpu_mb"] is not None]
            max_delta = max(deltas) if deltas else None
            out.append({
                "variant": variant, "model": model, "runs": len(mine),
                "train_images_per_s": sum(r["train_images_per_s"] for r in mine) / len(mine),
                "score_images_per_s": sum(r["score_images_per_s"] for r in mine) / len(mine),
                "peak_gpu_mb": max(gpu) if gpu else None,
                "max_metric_change_points": max_delta,
                "changes_metrics": None if max_delta is None or variant == "base" else max_delta > TOLERANCE_POINTS,
            })
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("config")
    c.add_argument("variant", choices=list(VARIANTS))
    c.add_argument("out")
    r = sub.add_parser("report")
    r.add_argument("dirs", nargs="+", help="VARIANT=DIR, one workflow folder per variant")
    r.add_argument("--json")
    a = ap.parse_args(argv)
    if a.cmd == "config":
        Path(a.out).write_text(yaml.safe_dump(variant_config(a.variant), sort_keys=False))
        return 0
    variants = {}
    for item in a.dirs:
        name, _, folder = item.partition("=")
        variants[name] = run_rows(Path(folder))
    rows = summarize(variants)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from speed_common import table

    print(table(rows, ["variant", "model", "runs", "train_images_per_s", "score_images_per_s", "peak_gpu_mb",
                       "max_metric_change_points", "changes_metrics"]))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
