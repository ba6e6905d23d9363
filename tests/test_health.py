"""Issue 22: training health (per-epoch statistics, the verdict's rules), the metric-vs-epoch
diagnostic and the opt-in best-on-test protocol, labelled wherever it appears."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from conftest import tiny_spec
from test_fastflow import tiny_fastflow
from uadflows import diagnostic
from uadflows.aggregate import aggregate
from uadflows.evaluate import evaluate
from uadflows.health import LN_MIN, EpochHealth, loss_trend, verdict
from uadflows.report import write_tables
from uadflows.report.synthetic import write_synthetic_sweep
from uadflows.score import score
from uadflows.train import load_model, train


def history(losses, ln):
    """Constructed history rows: the given losses, LayerNorm means falling linearly to ``ln``."""
    n = len(losses)
    return [{"epoch": e + 1, "loss": loss, **{f"ln_scale{i}": 1 + (ln[i] - 1) * (e + 1) / n for i in range(len(ln))}}
            for e, loss in enumerate(losses)]


def test_verdict_flags_a_constructed_collapse_and_not_a_healthy_run():
    falling = [100.0 - 500.0 * e for e in range(30)]  # linear, no sign of levelling off
    collapse = verdict(history(falling, [0.39, 0.14, 0.07]))
    assert collapse["health"] == "collapsing"
    assert collapse["message"] == ("collapsing: LayerNorm scale 0.07 (scale 2) still shrinking, loss "
                                   f"still falling {100 / 29:.2g} %/epoch of its total decrease")
    # the demo's healthy run: LayerNorm barely moved, loss still falling (a short run)
    assert verdict(history(falling, [0.94, 0.95, 0.97]))["health"] == "ok"
    levelled = [-1000.0 * (1 - 0.5**e) for e in range(30)]
    assert verdict(history(levelled, [0.5, 0.2]))["message"] == "shrunk: LayerNorm scale 0.2 (scale 1), loss levelled off"
    # the LayerNorm dropped early and stopped moving while the loss still falls: not the collapse
    stopped = [{**row, "ln_scale0": max(0.3, 1 - 0.2 * row["epoch"])} for row in history(falling, [1.0])]
    assert verdict(stopped)["message"] == "shrunk: LayerNorm scale 0.3 (scale 0), LayerNorm levelled off"
    # no LayerNorm (MSFlow, U-Flow, FastFlow on ViTs): nothing to judge, never flagged
    assert verdict([{"epoch": e, "loss": -e} for e in range(1, 30)])["health"] == "ok"
    # the threshold is the rule: just above it is ok, just below is flagged
    assert verdict(history(falling, [LN_MIN + 1e-3]))["health"] == "ok"
    assert verdict(history(falling, [LN_MIN - 1e-3]))["health"] == "collapsing"


def test_loss_trend():
    trend, fall = loss_trend([10.0 - 2 * e for e in range(11)])
    assert trend == pytest.approx(1.0) and fall == pytest.approx(10.0)  # 2 of 20 per epoch
    trend, _ = loss_trend([-(1 - 0.5**e) for e in range(20)])
    assert trend == pytest.approx(0.5**4)  # converging: 4-epoch windows, halving each epoch
    # a fast first fit, then a steady linear fall: still falling (the collapse's shape)
    trend, _ = loss_trend([-100.0 * (1 - 0.5**e) - 5.0 * e for e in range(30)])
    assert trend == pytest.approx(1.0, abs=1e-3)
    assert loss_trend([1.0, 0.5, 0.2, 0.1, 0.0]) == (None, None)  # fewer than two windows
    assert loss_trend([1.0] * 3 + [2.0] * 3) == (0.0, 0.0)


def test_epoch_health_statistics_by_hand():
    model = tiny_fastflow(norm="faithful").eval()
    with torch.no_grad():
        model.norms[1].weight.fill_(0.25)
    health, outs = EpochHealth(), []
    for _ in range(2):
        out = model(model.extract(torch.rand(3, 3, 32, 32)))
        health.add(out)
        outs.append(out)
    row = health.row(model)
    for i in range(2):
        z = torch.cat([o.z[i] for o in outs])
        lj = torch.cat([o.log_jac[i] for o in outs])
        assert row[f"z2_scale{i}"] == pytest.approx(float(z.pow(2).mean()), rel=1e-5)
        assert row[f"logdet_scale{i}"] == pytest.approx(float(lj.mean() / z[0].numel()), rel=1e-5)
    assert row["ln_scale1"] == pytest.approx(0.25)
    assert "ln_scale0" in row and "ln_scale0" not in EpochHealth().row(tiny_fastflow(norm="no-affine"))


def spec_with(epochs=3, protocol="last-epoch", **train_opts):
    spec = tiny_spec(epochs=epochs, norm="bounded")
    return spec.model_copy(update={"protocol": protocol,
                                   "train": spec.train.model_copy(update=train_opts)})


def train_score_evaluate(spec, tiny, out):
    out.mkdir(parents=True, exist_ok=True)
    spec.save(out / "spec.json")
    summary = train(spec, tiny["features"], out, index_csv=tiny["index"])
    score(out / "model.pt", tiny["features"], out / "scores.npz", device="cpu")
    metrics = evaluate(out / "spec.json", out / "summary.json", out / "scores.npz", out / "metrics.json")
    return summary, metrics


def test_training_records_health_and_the_labelled_diagnostic(tiny_category, tmp_path):
    out = tmp_path / "run"
    summary, metrics = train_score_evaluate(spec_with(eval_every=2), tiny_category, out)
    assert summary["health"]["health"] == "ok" and summary["protocol"] == "last-epoch"
    hist = pd.read_csv(out / "history.csv")
    assert list(hist.columns[:4]) == ["epoch", "loss", "lr", "seconds"]
    assert {f"{k}_scale{i}" for k in ("z2", "logdet", "ln") for i in range(3)} <= set(hist.columns)
    model = load_model(out / "model.pt")[0]
    assert list(hist.filter(like="ln_scale").iloc[-1]) == pytest.approx(model.norm_scales())
    diag = pd.read_csv(out / diagnostic.CSV_NAME)
    assert list(diag["epoch"]) == [2, 3]  # every 2nd epoch and the last
    assert (diag["note"] == "diagnostic: evaluated on the test set; not a protocol").all()
    assert diag["image_auroc"].between(0, 1).all() and diag["pixel_auroc"].between(0, 1).all()
    assert (out / diagnostic.FIGURE_NAME).stat().st_size > 1000
    # the last checkpoint's diagnostic is the scored model's image AUROC (same maps)
    assert metrics["metrics"]["image_auroc"] == pytest.approx(diag["image_auroc"].iloc[-1])
    assert metrics["health"]["health"] == "ok" and metrics["protocol"] == "last-epoch"


def test_best_on_test_is_opt_in_reports_the_best_checkpoint_and_is_labelled(tiny_category, tmp_path):
    spec = spec_with(epochs=4, protocol="best-on-test", eval_every=1)
    out = tmp_path / "best"
    summary, metrics = train_score_evaluate(spec, tiny_category, out)
    diag = pd.read_csv(out / diagnostic.CSV_NAME)
    best = diag.loc[diag["image_auroc"].idxmax()]
    assert summary["protocol"] == "best-on-test" and summary["best_epoch"] == int(best["epoch"])
    assert metrics["metrics"]["image_auroc"] == pytest.approx(best["image_auroc"])
    assert metrics["protocol"] == "best-on-test" and metrics["best_epoch"] == int(best["epoch"])
    table = aggregate([out / "metrics.json"], tmp_path / "metrics.csv")
    assert list(table["protocol"]) == ["best-on-test"]
    # never without the checkpoints it picks from, and no other protocol name
    with pytest.raises(ValueError, match="protocol 'best-on-test' needs eval_every"):
        train(spec_with(protocol="best-on-test"), tiny_category["features"], tmp_path / "x")
    with pytest.raises(ValidationError, match="protocol"):  # no other protocol name
        type(spec).model_validate({**spec.to_dict(), "protocol": "best-epoch"})


def test_report_lists_health_warnings_beside_failed_runs_and_labels_the_protocol(tmp_path):
    csv = write_synthetic_sweep(tmp_path / "sweep", categories={"mvtec": ["bottle"]}, seeds=(0,))
    df = pd.read_csv(csv)
    df.loc[0, ["health", "health_message"]] = ["collapsing", "collapsing: LayerNorm scale 0.07 (scale 2)"]
    df.loc[1, "health"] = "ok"
    df["protocol"] = "best-on-test"
    df.to_csv(csv, index=False)
    written = {p.name: p for p in write_tables(csv, tmp_path / "tables")}
    summary = written["summary.md"].read_text()
    section = summary.split("## Runs with a training health warning", 1)[1]
    assert "collapsing: LayerNorm scale 0.07 (scale 2)" in section
    assert df.loc[0, "model"] in section and df.loc[1, "model"] not in section
    assert "protocol best-on-test" in summary
    assert "tab:health_runs" in written["health_runs.tex"].read_text()
    assert all("best-on-test" in p.read_text() for n, p in written.items()
               if n.startswith("main") or n.startswith("overview"))


def test_config_carries_eval_every_and_refuses_best_on_test_without_it():
    from pathlib import Path

    from uadflows.config import ConfigError, load_plan, read_config

    raw = read_config(Path(__file__).resolve().parents[1] / "configs/test/tiny.yaml")
    model = next(iter(raw["models"].values()))
    model.update(eval_every=5, protocol="best-on-test", params={"norm": "bounded"})
    plan = load_plan(raw)
    spec = plan.spec(plan.runs[0])
    assert spec.train.eval_every == 5 and spec.protocol == "best-on-test"
    assert spec.params["norm"] == "bounded"
    assert json.loads(spec.to_json())["protocol"] == "best-on-test"
    del model["eval_every"]
    with pytest.raises(ConfigError, match=r"protocol': best-on-test needs 'eval_every'"):
        load_plan(raw)
    model.update(eval_every=5, protocol="best-epoch")  # the published tables' name, not ours
    with pytest.raises(ConfigError, match="protocol"):
        load_plan(raw)
