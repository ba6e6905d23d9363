"""MLflow as a shared server (issue 20): `uadflows mlflow`, the command of the workflow's
`mlflow` rule, logs a sweep through a real `mlflow server` on 127.0.0.1; a second run changes
nothing; with the server down it fails soon, with a message naming the server, and leaves
every result on disk, so that the next run, with the server back, logs them. And two sweeps
logging at once into one SQLite store both succeed, every run present exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_tracking import _free_port
from uadflows.report.synthetic import write_synthetic_sweep

BIN = Path(sys.executable).parent
EXPERIMENT = "uadflows-server-test"
N_JOBS = 4  # 1 category x 2 models x 2 seeds


def _sweep(root: Path, sweep: str) -> Path:
    csv = write_synthetic_sweep(root, categories={"mvtec": ["bottle"]}, sweep=sweep)
    (root / "tables").mkdir()
    (root / "tables" / "summary.md").write_text(f"# {sweep}\n")
    return csv


def _log(csv: Path, uri: str, sweep: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """What the `mlflow` rule runs (workflow/rules/report.smk)."""
    return subprocess.run(
        [str(BIN / "uadflows"), "mlflow", "--metrics", str(csv), "--tracking-uri", uri,
         "--experiment", EXPERIMENT, "--sweep", sweep, "--tables", str(csv.parent / "tables"),
         "--marker", str(csv.parent / "mlflow.json")],
        capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})},
        cwd=csv.parent)  # MLflow's defaults (./mlruns) never land in the repository


def _counts(p: subprocess.CompletedProcess) -> dict:
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return json.loads(Path(p.args[p.args.index("--marker") + 1]).read_text())


def _runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id], max_results=1000)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


class Server:
    """A real `mlflow server` on 127.0.0.1 over a SQLite store; stop() and start() again
    on the same port and store, as a team's server going down and coming back."""

    def __init__(self, root: Path):
        self.root, self.port = root, _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri",
             f"sqlite:///{self.root / 'server.db'}",
             "--default-artifact-root", str(self.root / "server-artifacts"),
             "--artifacts-destination", str(self.root / "server-artifacts"),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=5).close()
                return
            except OSError:
                assert self.proc.poll() is None, "mlflow server exited"
                assert time.monotonic() < deadline, f"mlflow server not up in {timeout_s} s"
                time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its uvicorn worker
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path / "server")
    srv.root.mkdir()
    yield srv
    srv.stop()


@pytest.mark.slow  # two server starts, 10-60 s each on a loaded 2-core machine
def test_sweep_logs_through_a_server_that_goes_down_and_comes_back(server, tmp_path):
    results = tmp_path / "results"
    csv = _sweep(results, "nightly")
    server.start()
    assert _counts(_log(csv, server.uri, "nightly"))["created"] == N_JOBS
    again = _counts(_log(csv, server.uri, "nightly"))
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, N_JOBS)
    assert len(_runs(server.uri)) == 1 + N_JOBS

    # A run's result changes (a rerun) while the server is down.
    record = results / "runs/mvtec/bottle/fastflow-r18/seed0/metrics.json"
    changed = json.loads(record.read_text())
    changed["metrics"]["image_auroc"] = 0.25
    record.write_text(json.dumps(changed))
    server.stop()
    (results / "mlflow.json").unlink()  # as Snakemake does before it reruns the rule
    before = _snapshot(results)
    started = time.monotonic()
    down = _log(csv, server.uri, "nightly")
    waited = time.monotonic() - started
    print(f"server down: the mlflow command failed after {waited:.1f} s")
    assert down.returncode == 1, down.stdout + down.stderr
    assert f"error: MLflow tracking server {server.uri} failed after 4 tries" in down.stderr
    assert "next run of the mlflow rule logs it" in down.stderr
    assert "Traceback" not in down.stderr
    assert waited < 120  # MLflow's own default retries take minutes
    assert _snapshot(results) == before  # every result stays, no marker claims success

    server.start()
    back = _counts(_log(csv, server.uri, "nightly"))
    assert (back["created"], back["updated"], back["unchanged"]) == (0, 1, N_JOBS - 1)
    runs = _runs(server.uri)
    assert len(runs) == 1 + N_JOBS
    logged = [r for r in runs if r.data.tags.get("uadflows.key") ==
              "mvtec/bottle/fastflow-r18/seed0"]
    assert len(logged) == 1 and logged[0].data.metrics["image_auroc"] == 0.25


def test_two_sweeps_log_at_once_into_one_sqlite_store(tmp_path):
    """Two processes, started together, create the schema, the experiment and a parent
    each; without the store's lock one dies ('table alembic_version already exists')."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    csvs = {s: _sweep(tmp_path / s, s) for s in ("night", "day")}
    procs = {s: subprocess.Popen(
        [str(BIN / "uadflows"), "mlflow", "--metrics", str(csv), "--tracking-uri", uri,
         "--experiment", EXPERIMENT, "--sweep", s, "--marker", str(csv.parent / "mlflow.json")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)  # ./mlruns
        for s, csv in csvs.items()}
    for s, proc in procs.items():
        out = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, f"sweep {s}:\n{out[-4000:]}"
        assert json.loads((csvs[s].parent / "mlflow.json").read_text())["created"] == N_JOBS
    runs = _runs(uri)
    keys = sorted((r.data.tags["uadflows.sweep"], r.data.tags["uadflows.role"],
                   r.data.tags.get("uadflows.key", "")) for r in runs)
    assert len(keys) == len(set(keys)) == 2 * (1 + N_JOBS), keys
