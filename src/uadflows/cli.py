"""The ``uadflows`` command: one sub-command per workflow step.

Each Snakemake rule calls exactly one of these; each works on its own too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from uadflows.data.index import FORMATS


def _json(text: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from None


def _log_job(threads: int | None = None) -> None:
    """Leave the scheduler's job id in the log (tells which jobs went through SLURM) and
    hold torch to the job's threads (a cluster job gets what its rule asked for)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    if os.environ.get("SLURM_JOB_ID"):
        print(f"SLURM_JOB_ID={os.environ['SLURM_JOB_ID']}", flush=True)


def cmd_demo_data(a) -> int:
    from uadflows.data.demo import make_demo

    kw = {k: getattr(a, k) for k in ("image_size", "n_train", "n_test_good", "n_test_defect")
          if getattr(a, k) is not None}
    root = make_demo(a.root, tuple(a.categories), seed=a.seed, **kw)
    print(f"demo data written to {root}")
    return 0


def cmd_verify(a) -> int:
    from uadflows.data import DatasetError, verify, write_index

    try:
        table, per_category = verify(a.dataset, Path(a.root), a.category or "all")
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.validation_fraction:
        from uadflows.data.holdout import hold_out

        from uadflows.data.realiad import sample_groups

        def groups(samples):  # Real-IAD: a physical sample's views are held out together
            return sample_groups([s.image for s in samples]) if a.dataset == "realiad" else None

        try:  # normal training images held out for thresholds (docs/statistics.md)
            per_category = {cat: hold_out(samples, a.validation_fraction, a.validation_seed,
                                          a.validation_key, groups(samples))
                            for cat, samples in per_category.items()}
        except DatasetError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        held = sum(s.split == "validation" for v in per_category.values() for s in v)
        table += (f"\nvalidation: {held} training image(s) held out (fraction "
                  f"{a.validation_fraction}, seed {a.validation_seed}), listed in the index")
    print(table)
    if a.index_dir:
        for cat, samples in per_category.items():
            write_index(samples, Path(a.index_dir) / f"{cat}.csv")
    return 0


def cmd_weights(a) -> int:
    from uadflows.backbones import weights

    if a.file:
        info = weights.import_file(a.backbone, a.file, a.cache)
    else:
        info = weights.fetch(a.backbone, a.cache)
    if a.marker:
        from uadflows.io import write_json

        write_json(a.marker, {"backbone": a.backbone, "weights": info})
    print(f"weights of {a.backbone}: {info}")
    return 0


def cmd_extract(a) -> int:
    from uadflows.features import extract

    _log_job(a.threads)
    meta = extract(a.index, a.out, a.extractor, batch_size=a.batch_size, device=a.device)
    print(f"features {meta['key']}: {meta['bytes'] / 2**20:.1f} MiB in {meta['seconds']:.1f} s -> {a.out}")
    return 0


def _spec(path: str):
    from uadflows.spec import JobSpec, SpecError

    try:
        return JobSpec.load(path)
    except (SpecError, FileNotFoundError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_train(a) -> int:
    from uadflows.features import open_cache
    from uadflows.preemption import Preempted, StopRequest
    from uadflows.train import train

    _log_job(a.threads)
    open_cache(a.features, index_csv=a.index)  # a bad cache is an error naming it: the extract rule rebuilds it
    with StopRequest() as stop:  # SLURM's SIGTERM / SIGUSR1: checkpoint, then exit
        try:
            summary = train(a.spec, a.features, a.out, index_csv=a.index,
                            stop_after_epoch=a.stop_after_epoch, stop=stop)
        except Preempted as e:
            print(f"stopped: {e}", flush=True)
            return e.exit_code
    print(json.dumps(summary))
    return 0


def cmd_score(a) -> int:
    from uadflows.score import score

    _log_job(a.threads)
    print(json.dumps(score(a.model, a.features, a.out, batch_size=a.batch_size, device=a.device)))
    return 0


def cmd_evaluate(a) -> int:
    from uadflows.evaluate import evaluate

    _log_job()
    r = evaluate(a.spec, a.summary, a.scores, a.out)
    print(json.dumps(r.get("metrics", {"status": r["status"], "error": r.get("error")}), indent=1))
    return 0


def cmd_aggregate(a) -> int:
    from uadflows.aggregate import aggregate

    df = aggregate(a.metrics, a.out)
    failed = df[df["status"] != "ok"] if len(df) else df
    print(f"{len(df)} runs -> {a.out}" + (f"; {len(failed)} FAILED" if len(failed) else ""))
    return 0


def cmd_report(a) -> int:
    from uadflows.report.tables import write_tables

    out = Path(a.out)
    tables = write_tables(a.metrics, out / "tables", spread=a.spread, resamples=a.resamples,
                          seed=a.seed)
    print(f"tables: {out / 'tables'} ({len(tables)} files)")
    if not a.no_figures:
        from uadflows.report.figures import write_figures

        figs = write_figures(a.metrics, out / "figures")
        print(f"figures: {out / 'figures'} ({len(figs)} files)")
    summary = out / "tables" / "summary.md"
    if summary.exists():
        print(summary.read_text())
    return 0


def cmd_mlflow(a) -> int:
    from uadflows.report import ReportError
    from uadflows.tracking import log_sweep

    try:
        counts = log_sweep(a.metrics, tracking_uri=a.tracking_uri, experiment=a.experiment,
                           sweep=a.sweep, tables_dir=a.tables, figures_dir=a.figures)
    except ReportError as e:  # e.g. the tracking server is down: say so, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
    if a.marker:
        from uadflows.io import write_json

        write_json(a.marker, {"tracking_uri": a.tracking_uri, "experiment": a.experiment, **counts})
    print(f"MLflow {a.tracking_uri} experiment {a.experiment!r}: {counts}")
    return 0


def cmd_compare(a) -> int:
    import pandas as pd

    from uadflows.tracking import compare

    df = compare(a.tracking_uri, a.experiment, a.metric, rows=a.rows, cols=a.cols)
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(df.round(4).to_string())
    return 0


def cmd_check_config(a) -> int:
    from uadflows.config import ConfigError, load_plan, read_config

    try:
        plan = load_plan(read_config(a.config))
    except ConfigError as e:
        print(f"error: {a.config}: {e}", file=sys.stderr)
        return 2
    print(f"{a.config}: sweep {plan.sweep!r}, {len(plan.runs)} runs, "
          f"{len(plan.extractors)} feature caches, datasets "
          + ", ".join(f"{d.name} ({len(d.categories)} categories)" for d in plan.datasets.values()))
    return 0


def cmd_export_ad2(a) -> int:
    from uadflows.ad2_export import ExportError, export_category
    from uadflows.data import DatasetError

    _log_job(a.threads)
    threshold = a.threshold
    if threshold is None:  # the run's own, chosen on its validation images by `evaluate`
        metrics_json = Path(a.model).with_name("metrics.json")
        try:
            threshold = json.loads(metrics_json.read_text())["metrics"]["validation_threshold"]
        except (OSError, KeyError, json.JSONDecodeError) as e:
            print(f"error: {metrics_json}: no validation_threshold ({e!r}); evaluate the run "
                  "first or give --threshold", file=sys.stderr)
            return 2
    try:
        n = export_category(a.model, a.root, a.category, a.out, threshold=threshold,
                            extractor_args=a.extractor, batch_size=a.batch_size, device=a.device)
    except (ExportError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{a.category}: {n} private test images exported to {a.out}")
    return 0


def cmd_check_ad2_export(a) -> int:
    from uadflows.ad2_export import check_export
    from uadflows.data import DatasetError

    try:
        faults = check_export(a.export, a.root)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if faults:
        print(f"{a.export}: {len(faults)} fault(s), not ready for upload:", file=sys.stderr)
        print("\n".join(f"  {f}" for f in faults), file=sys.stderr)
        return 2
    print(f"{a.export}: complete (8 objects, test_private and test_private_mixed; float16 "
          "TIFF maps and 0/255 PNG segmentations)")
    return 0


def cmd_schema(a) -> int:
    from uadflows.config import schema_yaml

    text = schema_yaml()
    if a.out:
        from uadflows.io import atomic_path

        with atomic_path(a.out) as tmp:
            tmp.write_text(text)
    else:
        print(text, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from uadflows.data.index import FORMATS  # torch-free

    p = argparse.ArgumentParser(prog="uadflows", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("demo-data", help="write the demo dataset (skimage textures, MVTec layout)")
    s.add_argument("--root", required=True)
    s.add_argument("--categories", nargs="+", default=["brick", "grass", "gravel"])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--image-size", type=int)
    s.add_argument("--n-train", type=int)
    s.add_argument("--n-test-good", type=int)
    s.add_argument("--n-test-defect", type=int)
    s.set_defaults(func=cmd_demo_data)

    s = sub.add_parser("verify", help="index and check a dataset; print a table per category")
    s.add_argument("--dataset", required=True, choices=FORMATS)
    s.add_argument("--root", required=True)
    s.add_argument("--category", nargs="+")
    s.add_argument("--index-dir", help="write {category}.csv indexes here")
    s.add_argument("--validation-fraction", type=float, default=0.0,
                   help="hold out this share of the training images as the validation split")
    s.add_argument("--validation-seed", type=int, default=0, help="seed of the held-out choice")
    s.add_argument("--validation-key", default="--validation-fraction",
                   help="the config key named in errors about the fraction")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("weights", help="fetch (or import from a file) pretrained weights into a cache")
    s.add_argument("--backbone", required=True)
    s.add_argument("--cache", required=True)
    s.add_argument("--file", help="a local weights file instead of the hub")
    s.add_argument("--marker", help="write a JSON note here when done")
    s.set_defaults(func=cmd_weights)

    s = sub.add_parser("extract", help="cache a frozen backbone's features of one category")
    s.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    s.add_argument("--index", required=True)
    s.add_argument("--extractor", required=True, type=_json, help="create_extractor arguments (JSON)")
    s.add_argument("--out", required=True)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_extract)

    s = sub.add_parser("train", help="train one run from cached features")
    s.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    s.add_argument("--spec", required=True, type=_spec, help="the job's spec.json")
    s.add_argument("--features", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--index", help="the category index (checks the cache's dataset version)")
    s.add_argument("--stop-after-epoch", type=int, help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("score", help="anomaly maps and image scores of the test split")
    s.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    s.add_argument("--model", required=True)
    s.add_argument("--features", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--device")
    s.set_defaults(func=cmd_score)

    s = sub.add_parser("evaluate", help="metrics.json from scores and ground truth")
    s.add_argument("--spec", required=True, help="the job's spec.json")
    s.add_argument("--summary", required=True, help="train's summary.json")
    s.add_argument("--scores", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("aggregate", help="all metrics.json -> metrics.csv")
    s.add_argument("--out", required=True)
    s.add_argument("metrics", nargs="+")
    s.set_defaults(func=cmd_aggregate)

    s = sub.add_parser("report", help="LaTeX tables and figures from metrics.csv")
    s.add_argument("--metrics", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--no-figures", action="store_true")
    s.add_argument("--spread", choices=["std", "interval"], default="std",
                   help="after ±: std over seeds, or half-width of the bootstrap interval")
    s.add_argument("--resamples", type=int, default=1000, help="paired bootstrap resamples")
    s.add_argument("--seed", type=int, default=0, help="seed of the paired bootstrap")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("mlflow", help="log a sweep's runs to MLflow (idempotent)")
    s.add_argument("--metrics", required=True)
    s.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    s.add_argument("--experiment", required=True)
    s.add_argument("--sweep", required=True)
    s.add_argument("--tables")
    s.add_argument("--figures")
    s.add_argument("--marker")
    s.set_defaults(func=cmd_mlflow)

    s = sub.add_parser("compare", help="pivot of a metric from the MLflow store")
    s.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    s.add_argument("--experiment", required=True)
    s.add_argument("--metric", default="image_auroc")
    s.add_argument("--rows", default="category")
    s.add_argument("--cols", default="model")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("export-ad2", help="MVTec AD 2: score an object's private test sets "
                       "and write the evaluation server's files")
    s.add_argument("--model", required=True, help="model.pt of a run on this object")
    s.add_argument("--root", required=True, help="the MVTec AD 2 root")
    s.add_argument("--category", required=True)
    s.add_argument("--out", required=True, help="the export folder (shared by the 8 objects)")
    s.add_argument("--threshold", type=float,
                   help="map value at and above which a pixel is anomalous (default: the "
                   "run's validation_threshold in the metrics.json beside --model)")
    s.add_argument("--extractor", type=_json, help="extractor arguments (JSON); default: the run's")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--device", default="auto")
    s.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    s.set_defaults(func=cmd_export_ad2)

    s = sub.add_parser("check-ad2-export", help="MVTec AD 2: check an export is complete "
                       "before upload")
    s.add_argument("export")
    s.add_argument("--root", help="the MVTec AD 2 root: expect its private images and sizes")
    s.set_defaults(func=cmd_check_ad2_export)


    s = sub.add_parser("schema", help="the config's JSON schema, generated from uadflows.config")
    s.add_argument("--out", help="write it here (workflow/schemas/config.schema.yaml) instead of stdout")
    s.set_defaults(func=cmd_schema)

    s = sub.add_parser("check-config", help="validate a config and print what it plans")
    s.add_argument("config")
    s.set_defaults(func=cmd_check_config)
    return p


def main(argv: list[str] | None = None) -> int:
    from uadflows.io import DiskFullError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DiskFullError as e:  # the path and what to do, not a traceback through torch
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
