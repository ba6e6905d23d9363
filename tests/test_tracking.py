"""MLflow logging of a tiny synthetic sweep into a temporary SQLite store: run counts,
params, metrics, loss history, idempotence, replacement of changed runs, and the REST API
of a real ``mlflow server`` over the same store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from uadflows.report import ReportError
from uadflows.report.synthetic import write_synthetic_sweep
from uadflows.tracking import compare, log_sweep

EXPERIMENT, SWEEP = "uadflows-test", "synthetic"
FAILED = ("mvtec", "bottle", "msflow-wrn50", 1)
N_JOBS = 4  # 1 category x 2 models x 2 seeds


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sweep on disk (dummy figure files stand in for the real ones) and a store URI."""
    root = tmp_path_factory.mktemp("tracking")
    csv = write_synthetic_sweep(root / "results", categories={"mvtec": ["bottle"]},
                                failed=(FAILED,))
    tables = root / "results" / "tables"
    tables.mkdir()
    (tables / "main_mvtec_image_auroc.tex").write_text("\\begin{table}\\end{table}\n")
    (tables / "summary.md").write_text("# results\n")
    figures = root / "results" / "figures"
    figures.mkdir()
    for model in ("fastflow-r18", "msflow-wrn50"):
        (figures / f"examples_mvtec_bottle_{model}.png").write_bytes(b"png " + model.encode())
    (figures / "bars_mvtec.png").write_bytes(b"bars")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        # nothing may fall back to ./mlflow.db or ./mlruns of the working directory
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(root)
        first = _log(csv, uri, root)
        second = _log(csv, uri, root)
        yield {"csv": csv, "uri": uri, "root": root, "first": first, "second": second}


def _log(csv: Path, uri: str, root: Path) -> dict:
    return log_sweep(csv, tracking_uri=uri, experiment=EXPERIMENT, sweep=SWEEP,
                     tables_dir=csv.parent / "tables", figures_dir=csv.parent / "figures",
                     artifact_location=str(root / "artifacts"))


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(uri):
    client = _client(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def test_log_twice_keeps_one_run_each(store):
    assert store["first"]["created"] == N_JOBS and store["first"]["parent"] == "created"
    assert store["second"] == {**store["first"], "created": 0, "unchanged": N_JOBS,
                               "parent": "existing"}
    _, runs = _runs(store["uri"])
    assert len(runs) == 1 + N_JOBS
    parents = [r for r in runs if r.data.tags["uadflows.role"] == "sweep"]
    children = [r for r in runs if r.data.tags["uadflows.role"] == "job"]
    assert len(parents) == 1 and len(children) == N_JOBS
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    metrics = parents[0].data.metrics
    assert {k: metrics[k] for k in ("jobs", "jobs_failed")} == {"jobs": N_JOBS, "jobs_failed": 1.0}
    ok = pd.read_csv(store["csv"]).query("status == 'ok'")
    for model, value in ok.groupby("model")["image_auroc"].mean().items():  # per-entry means
        assert metrics[f"image_auroc.{model}"] == pytest.approx(value)


def test_child_params_metrics_history(store):
    client, runs = _runs(store["uri"])
    key = "mvtec/bottle/fastflow-r18/seed0"
    run = next(r for r in runs if r.data.tags.get("uadflows.key") == key)
    folder = store["csv"].parent / "runs" / "mvtec" / "bottle" / "fastflow-r18" / "seed0"
    record = json.loads((folder / "metrics.json").read_text())
    spec = json.loads((folder / "spec.json").read_text())
    for name, value in record["metrics"].items():
        assert run.data.metrics[name] == pytest.approx(value)
    assert run.data.metrics["flow_params"] == record["cost"]["flow_params"]
    assert run.data.params["train.epochs"] == str(spec["train"]["epochs"])
    assert run.data.params["image_size"] == json.dumps(spec["image_size"])
    assert run.data.params["params.clamp"] == str(spec["params"]["clamp"])
    for tag in ("dataset", "category", "method", "backbone", "model", "seed", "protocol"):
        assert run.data.tags[tag] == str(spec[tag] if tag in spec else record["key"][tag])
    assert run.data.tags["status"] == "ok" and run.info.status == "FINISHED"
    history = pd.read_csv(folder / "history.csv")
    logged = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in logged] == history["epoch"].tolist()  # logged twice, stored once
    assert [m.value for m in logged] == pytest.approx(history["loss"].tolist())
    # the training health statistics, stepped like the loss, and the verdict as a tag
    for column in ("z2_scale0", "logdet_scale0", "ln_scale0"):
        stepped = client.get_metric_history(run.info.run_id, f"train_{column}")
        assert [m.value for m in stepped] == pytest.approx(history[column].tolist())
    assert run.data.tags["uadflows.health"] == record["health"]["message"] == "ok"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "spec.json", "history.csv", "figures"} <= artifacts
    figures = [a.path for a in client.list_artifacts(run.info.run_id, "figures")]
    assert figures == ["figures/examples_mvtec_bottle_fastflow-r18.png"]


def test_failed_run_and_parent_artifacts(store):
    client, runs = _runs(store["uri"])
    key = "/".join(map(str, FAILED[:3])) + f"/seed{FAILED[3]}"
    failed = next(r for r in runs if r.data.tags.get("uadflows.key") == key)
    assert failed.info.status == "FAILED" and failed.data.tags["status"] == "failed"
    assert "diverged" in failed.data.tags["uadflows.error"]
    assert not {"image_auroc", "pixel_auroc"} & set(failed.data.metrics)
    parent = next(r for r in runs if r.data.tags["uadflows.role"] == "sweep")
    tables = {a.path for a in client.list_artifacts(parent.info.run_id, "tables")}
    assert tables == {"tables/main_mvtec_image_auroc.tex", "tables/summary.md"}
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert figures == {"figures/bars_mvtec.png"}


def test_compare_pivot(store):
    table = compare(store["uri"], EXPERIMENT, "image_auroc")
    runs = pd.read_csv(store["csv"])
    expected = runs[runs.status == "ok"].groupby("model")["image_auroc"].mean()
    assert list(table.index) == ["bottle"]
    for model, value in expected.items():
        assert table.loc["bottle", model] == pytest.approx(value)
    by_seed = compare(store["uri"], EXPERIMENT, "pixel_auroc", rows="model", cols="seed",
                      sweep=SWEEP)
    assert set(by_seed.columns) == {"0", "1"}


def test_errors(store):
    with pytest.raises(ReportError, match="no run of sweep 'other'"):
        log_sweep(store["csv"], tracking_uri=store["uri"], experiment=EXPERIMENT, sweep="other")
    with pytest.raises(ReportError, match="no run has metric 'accuracy'"):
        compare(store["uri"], EXPERIMENT, "accuracy")
    with pytest.raises(ReportError, match="no experiment 'missing'"):
        compare(store["uri"], "missing", "image_auroc")
    with pytest.raises(ReportError, match="rows='colour'"):
        compare(store["uri"], EXPERIMENT, "image_auroc", rows="colour")


def test_changed_run_is_replaced(store, tmp_path, monkeypatch):
    # same store (a fresh SQLite store costs seconds of migrations), its own experiment
    csv = write_synthetic_sweep(tmp_path / "results", categories={"mvtec": ["bottle"]},
                                seeds=(0,), models=[("fastflow-r18", "fastflow", "resnet18")])
    uri, experiment = store["uri"], "uadflows-test-changed"
    monkeypatch.chdir(tmp_path)
    kwargs = dict(tracking_uri=uri, experiment=experiment, sweep=SWEEP,
                  artifact_location=str(tmp_path / "artifacts"))
    assert log_sweep(csv, **kwargs)["created"] == 1
    path = csv.parent / "runs" / "mvtec" / "bottle" / "fastflow-r18" / "seed0" / "metrics.json"
    record = json.loads(path.read_text())
    record["metrics"]["image_auroc"] = 0.5  # the job was re-run and scored differently
    path.write_text(json.dumps(record))
    counts = log_sweep(csv, **kwargs)
    assert (counts["created"], counts["updated"], counts["unchanged"]) == (0, 1, 0)
    client = _client(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 2  # the parent and the one job: the old child is gone
    child = next(r for r in runs if r.data.tags["uadflows.role"] == "job")
    assert child.data.metrics["image_auroc"] == 0.5
    assert len(client.get_metric_history(child.info.run_id, "train_loss")) == 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow  # the server takes 10-30 s to start on a shared 2-core machine
def test_mlflow_server_rest_api(store):
    root, port = store["root"], _free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    server = subprocess.Popen(
        [str(mlflow), "server", "--backend-store-uri", store["uri"],
         "--default-artifact-root", str(root / "server-artifacts"),
         "--artifacts-destination", str(root / "server-artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": store["uri"]})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=5).close()
                break
            except OSError:
                assert server.poll() is None, "mlflow server exited"
                assert time.monotonic() < deadline, "mlflow server did not start in 120 s"
                time.sleep(1)
        found = _get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}")
        experiment_id = found["experiment"]["experiment_id"]
        runs = _get(f"{base}/api/2.0/mlflow/runs/search",
                    {"experiment_ids": [experiment_id], "max_results": 100})["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
        assert sorted(t["uadflows.role"] for t in tags) == ["job"] * N_JOBS + ["sweep"]
        parent_id = next(r["info"]["run_id"] for r, t in zip(runs, tags)
                         if t["uadflows.role"] == "sweep")
        children = [(r, t) for r, t in zip(runs, tags) if t["uadflows.role"] == "job"]
        assert {t["mlflow.parentRunId"] for _, t in children} == {parent_id}
        csv = pd.read_csv(store["csv"])
        for run, tag in children:
            metrics = {m["key"]: m["value"] for m in run["data"].get("metrics", [])}
            row = csv[(csv.model == tag["model"]) & (csv.seed == int(tag["seed"]))].iloc[0]
            if row["status"] == "ok":
                assert metrics["image_auroc"] == pytest.approx(row["image_auroc"])
            else:
                assert "image_auroc" not in metrics and run["info"]["status"] == "FAILED"
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn worker
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
