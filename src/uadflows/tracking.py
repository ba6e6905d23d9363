"""MLflow tracking of a sweep: one experiment per config, one parent run per sweep, one child
run per job (dataset, category, model, seed).

Idempotent by design: every run carries the tags ``uadflows.sweep`` and ``uadflows.key``
(dataset/category/model/seed<N>) and, once fully logged, ``uadflows.fingerprint`` (a hash of
everything logged). Logging again skips a run whose fingerprint is unchanged and replaces
(deletes, then logs afresh) one whose files changed, so a run is never duplicated and its
metric history never holds the same steps twice. Writers of one SQLite store take turns
(a lock file beside it), so two sweeps may log at once; on a tracking server that is down,
logging fails after a few quick retries with an error naming the server, and the results stay
on disk for the next run to log. mlflow is imported inside the functions: it is slow to import.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from uadflows.report.runs import (
    COST_COLUMNS,
    ReportError,
    load_metrics,
    read_history,
    read_json,
    run_dir,
    run_key,
)

TAG_ROLE, TAG_SWEEP, TAG_KEY = "uadflows.role", "uadflows.sweep", "uadflows.key"
TAG_FINGERPRINT, TAG_ERROR = "uadflows.fingerprint", "uadflows.error"
TAG_HEALTH = "uadflows.health"
HEALTH_PREFIXES = ("z2_scale", "logdet_scale", "ln_scale")
# The MLflow 3 UI opens an experiment of this kind on its runs, not on GenAI traces
# (mlflow/server/js: ExperimentKind.CUSTOM_MODEL_DEVELOPMENT).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
RUN_TAGS = ["dataset", "category", "method", "backbone", "model", "seed", "protocol", "status",
            "resolution"]
MAX_VALUE = 5000  # MLflow rejects longer param/tag values
PARENT_FIGURES = ("curves_", "loss_", "bars_")  # comparison figures shared by many runs
# A server that is down fails the rule within seconds, not after MLflow's default 7 retries
# with exponential backoff (minutes); settings of the user's own environment win.
HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def log_sweep(
    metrics_csv: str | Path,
    *,
    tracking_uri: str,
    experiment: str,
    sweep: str,
    tables_dir: str | Path | None = None,
    figures_dir: str | Path | None = None,
    artifact_location: str | None = None,
) -> dict:
    """Log (or bring up to date) every run of ``sweep`` listed in ``metrics_csv``.

    artifact_location: where a *new* experiment stores artifacts (MLflow's default else).
    Returns counts {"created", "updated", "unchanged"} of child runs, plus "parent"
    ("created" or "existing"), "parent_run_id" and "experiment_id".
    """
    if "'" in sweep:
        raise ReportError(f"sweep name {sweep!r}: a quote cannot be used in an MLflow filter")
    runs = load_metrics(metrics_csv)
    jobs = runs[runs["sweep"] == sweep]
    if jobs.empty:
        raise ReportError(f"{metrics_csv}: no run of sweep {sweep!r}; sweeps listed: "
                          f"{sorted(set(runs['sweep']))}")
    with _quiet(), _unreachable_is_an_error(tracking_uri), _store_lock(tracking_uri):
        client = _client(tracking_uri)
        experiment_id = _experiment(client, experiment, artifact_location)
        parent_id, parent_state = _parent(client, experiment_id, sweep, jobs, tables_dir,
                                          figures_dir)
        existing = _children(client, experiment_id, sweep)
        counts = {"created": 0, "updated": 0, "unchanged": 0}
        for _, row in jobs.iterrows():
            job = _Job(row, Path(metrics_csv), figures_dir, parent_id)
            found = existing.pop(job.key, [])
            done = [r for r in found if r.data.tags.get(TAG_FINGERPRINT) == job.fingerprint
                    and r.info.status in ("FINISHED", "FAILED")]
            keep = done[0].info.run_id if done else None
            for stale in found:
                if stale.info.run_id != keep:  # changed files, an interrupted log, a double
                    client.delete_run(stale.info.run_id)
            if done:
                counts["unchanged"] += 1
                continue
            counts["updated" if found else "created"] += 1
            job.log(client, experiment_id, sweep)
    return {**counts, "parent": parent_state, "parent_run_id": parent_id,
            "experiment_id": experiment_id}


def compare(
    tracking_uri: str,
    experiment: str,
    metric: str,
    *,
    rows: str = "category",
    cols: str = "model",
    sweep: str | None = None,
) -> pd.DataFrame:
    """A rows x cols pivot of ``metric`` (mean over seeds) over the child runs of an
    experiment (of one sweep when given): what ``uadflows compare`` prints. ``rows`` and
    ``cols`` may be any run tag or logged parameter (e.g. ``train.epochs``)."""
    with _quiet():
        client = _client(tracking_uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = sorted(e.name for e in client.search_experiments())
            raise ReportError(f"{tracking_uri}: no experiment {experiment!r}; there are {names}")
        filters = [f"tags.`{TAG_ROLE}` = 'job'"]
        if sweep is not None:
            filters.append(f"tags.`{TAG_SWEEP}` = '{sweep}'")
        runs = _search(client, found.experiment_id, " and ".join(filters))
    if not runs:
        raise ReportError(f"{tracking_uri}: experiment {experiment!r} has no job runs"
                          + (f" of sweep {sweep!r}" if sweep else ""))
    records = [{**r.data.params, **{t: r.data.tags.get(t) for t in RUN_TAGS}, **r.data.metrics}
               for r in runs]
    table = pd.DataFrame(records)
    for name, value in (("rows", rows), ("cols", cols)):
        if value not in table.columns:
            known = sorted(set(RUN_TAGS) | set().union(*(r.data.params for r in runs)))
            raise ReportError(f"{name}={value!r}: not a tag or parameter of the runs; choose one of {known}")
    if metric not in table.columns or table[metric].isna().all():
        known = sorted(set().union(*(r.data.metrics for r in runs)))
        raise ReportError(f"{experiment!r}: no run has metric {metric!r}; logged: {known}")
    return table.pivot_table(index=rows, columns=cols, values=metric, aggfunc="mean").sort_index()


# ---- one job ---------------------------------------------------------------------------
class _Job:
    """Everything one child run logs, read from its run folder, and its fingerprint."""

    def __init__(self, row: pd.Series, metrics_csv: Path, figures_dir, parent_id: str):
        self.row, self.key, self.parent_id = row, run_key(row), parent_id
        self.folder = _folder(row, metrics_csv)
        # records.*: the per-image records the intervals come from (uadflows.stats);
        # diagnostic_on_test.*: the labelled metric-vs-epoch diagnostic (uadflows.diagnostic)
        names = ("metrics.json", "spec.json", "summary.json", "history.csv", "records.npz", "records.csv",
                 "diagnostic_on_test.csv", "diagnostic_on_test.png")
        self.files = [self.folder / n for n in names
                      if self.folder and (self.folder / n).is_file()]
        self.figures = []
        if figures_dir is not None:
            from uadflows.report.labels import figures_for_run

            self.figures = figures_for_run(figures_dir, row["dataset"], row["category"],
                                           row["model"])
        spec_path = self.folder / "spec.json" if self.folder else None
        record_path = self.folder / "metrics.json" if self.folder else None
        self.record = read_json(record_path) if record_path and record_path.is_file() else {}
        self.params = _params(spec_path, self.record)
        if row["status"] == "ok" and not self.record:
            raise ReportError(f"{self.folder}: metrics.json missing for a finished run")
        self.history = read_history(self.folder / "history.csv") if self.folder else None
        digest = hashlib.sha256(f"{parent_id}\n{self.key}\n{row['status']}\n".encode())
        for path in self.files + self.figures:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        self.fingerprint = digest.hexdigest()

    def log(self, client, experiment_id: str, sweep: str) -> None:
        from mlflow.entities import Metric, Param, RunTag

        status = self.row["status"]
        tags = {"mlflow.parentRunId": self.parent_id, "mlflow.runName": self.key,
                TAG_ROLE: "job", TAG_SWEEP: sweep, TAG_KEY: self.key,
                **{t: str(self.row[t]) for t in RUN_TAGS}}
        error = self.record.get("error") or self.row.get("error", "")
        if status == "failed":
            tags[TAG_ERROR] = str(error or "(no message)")[:MAX_VALUE]
        health = (self.record.get("health") or {}).get("message")
        if health:  # the training health verdict (uadflows.health)
            tags[TAG_HEALTH] = str(health)[:MAX_VALUE]
        times = self.record.get("times") or {}
        start, end = (int(times[k] * 1000) if times.get(k) else None for k in ("started", "ended"))
        run = client.create_run(experiment_id, tags=tags, run_name=self.key, start_time=start)
        run_id = run.info.run_id
        now = end or int(time.time() * 1000)
        params = [Param(k, v[:MAX_VALUE]) for k, v in self.params.items()]
        metrics = [Metric(k, v, now, 0) for k, v in self._scalars().items()]
        if self.history is not None:
            # the training health statistics of history.csv (health.py), stepped like the loss
            stats = [(c, f"train_{c}") for c in self.history.columns if c.startswith(HEALTH_PREFIXES)]
            for column, name in (("loss", "train_loss"), ("lr", "lr"), *stats):
                if column in self.history.columns:
                    metrics += [Metric(name, float(v), now, int(e))
                                for e, v in zip(self.history["epoch"], self.history[column])]
        diag = self.folder / "diagnostic_on_test.csv" if self.folder else None
        if diag is not None and diag.is_file():  # named so it can't pass for a result
            d = pd.read_csv(diag)
            metrics += [Metric(f"diagnostic_on_test_{c}", float(v), now, int(e))
                        for c in d.columns if c not in ("epoch", "note")
                        for e, v in zip(d["epoch"], d[c]) if pd.notna(v)]
        for i in range(0, max(len(params), len(metrics)), 100):  # MLflow's batch limits
            client.log_batch(run_id, metrics=metrics[i:i + 100], params=params[i:i + 100])
        for path in self.files:
            client.log_artifact(run_id, str(path))
        for path in self.figures:
            client.log_artifact(run_id, str(path), "figures")
        client.log_batch(run_id, tags=[RunTag(TAG_FINGERPRINT, self.fingerprint)])
        client.set_terminated(run_id, "FINISHED" if status == "ok" else "FAILED", end_time=end)

    def _scalars(self) -> dict[str, float]:
        values = dict(self.record.get("metrics") or {})
        cost = self.record.get("cost") or {}
        values.update({k: cost.get(k) for k in [*COST_COLUMNS, "epochs"]})
        bounds = (self.record.get("statistics") or {}).get("intervals", {})
        for k, (low, high) in bounds.items():  # the bootstrap interval of every metric
            values[f"{k}_low"], values[f"{k}_high"] = low, high
        thresholds = self.record.get("thresholds") or {}  # chosen on the validation images
        for part in ("image", "pixel"):
            values[f"val_{part}_threshold"] = (thresholds.get(part) or {}).get("value")
        values["n_validation"] = (thresholds.get("validation") or {}).get("n")
        return {k: float(v) for k, v in values.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _folder(row: pd.Series, metrics_csv: Path) -> Path | None:
    try:
        return run_dir(row, metrics_csv)
    except ReportError:
        if row["status"] == "ok":
            raise
        return None  # a run that failed early may have no folder; it is still logged


def _params(spec_path: Path | None, record: dict) -> dict[str, str]:
    """Every resolved parameter of the job spec (flattened) and what produced the run."""
    from uadflows.spec import JobSpec, SpecError, flatten

    params = {k: str(v) for k, v in (record.get("provenance") or {}).items()}
    if spec_path is None or not spec_path.is_file():
        return params
    raw = read_json(spec_path)
    try:
        return {**JobSpec.parse(raw, str(spec_path)).flat(), **params}
    except SpecError:  # a hand-made folder (report.synthetic): its keys as they are
        return {**flatten(raw), **params}


# ---- the store ------------------------------------------------------------------------------
def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith(("http://", "https://")):
        for name, value in HTTP_RETRIES.items():
            os.environ.setdefault(name, value)
    return MlflowClient(tracking_uri=tracking_uri)


@contextmanager
def _unreachable_is_an_error(tracking_uri: str):
    """A server that cannot be reached (or answers with errors) becomes a ReportError that
    names it and says that nothing is lost; MLflow's own message is the cause."""
    if not tracking_uri.startswith(("http://", "https://")):
        yield
        return
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, OSError) as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        tries = 1 + int(os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
        raise ReportError(f"MLflow tracking server {tracking_uri} failed after {tries} tries "
                          f"({first}); nothing was lost: every result stays on disk and the "
                          "next run of the mlflow rule logs it") from e


@contextmanager
def _store_lock(tracking_uri: str):
    """One writer at a time on a SQLite store (``<db>.lock`` beside it): two processes
    creating the schema, the experiment or a sweep's parent at once would otherwise race."""
    from urllib.parse import urlparse

    if not tracking_uri.startswith("sqlite:///"):
        yield  # a server or a database server serialises its own writes
        return
    db = Path(urlparse(tracking_uri).path)
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ---- experiment and parent ------------------------------------------------------------------


def _experiment(client, name: str, artifact_location: str | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(name, artifact_location=artifact_location,
                                        tags={EXPERIMENT_KIND[0]: EXPERIMENT_KIND[1]})
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    if found.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        client.set_experiment_tag(found.experiment_id, *EXPERIMENT_KIND)
    return found.experiment_id


def _parent(client, experiment_id, sweep, jobs, tables_dir, figures_dir) -> tuple[str, str]:
    from mlflow.entities import Metric

    found = _search(client, experiment_id,
                    f"tags.`{TAG_ROLE}` = 'sweep' and tags.`{TAG_SWEEP}` = '{sweep}'")
    if found:
        run, state = sorted(found, key=lambda r: r.info.start_time)[0], "existing"
    else:
        run = client.create_run(experiment_id, run_name=sweep,
                                tags={TAG_ROLE: "sweep", TAG_SWEEP: sweep})
        state = "created"
    run_id = run.info.run_id
    counts = {"jobs": float(len(jobs)), "jobs_failed": float((jobs["status"] == "failed").sum()),
              **_entry_means(jobs)}
    changed = [Metric(k, v, int(time.time() * 1000), 0) for k, v in counts.items()
               if run.data.metrics.get(k) != v]  # unchanged values are not logged twice
    if changed:
        client.log_batch(run_id, metrics=changed)
    if tables_dir is not None:
        for path in sorted(Path(tables_dir).glob("*")):
            if path.suffix in (".tex", ".md"):
                client.log_artifact(run_id, str(path), "tables")
    if figures_dir is not None:
        for path in sorted(Path(figures_dir).glob("*")):
            if path.name.startswith(PARENT_FIGURES) and path.suffix in (".png", ".pdf"):
                client.log_artifact(run_id, str(path), "figures")
    client.set_terminated(run_id, "FINISHED")
    return run_id, state


def _entry_means(jobs: pd.DataFrame) -> dict[str, float]:
    """``<metric>.<model>``: each entry's (model's) mean over its finished runs."""
    ok = jobs[jobs["status"] == "ok"]
    out = {}
    for metric in [c for c in ("image_auroc", "pixel_auroc", "au_pro", "pixel_ap") if c in ok.columns]:
        for model, value in ok.groupby("model")[metric].mean().items():
            if math.isfinite(value):
                out[f"{metric}.{model}"] = float(value)
    return out


def _children(client, experiment_id: str, sweep: str) -> dict[str, list]:
    runs = _search(client, experiment_id,
                   f"tags.`{TAG_ROLE}` = 'job' and tags.`{TAG_SWEEP}` = '{sweep}'")
    by_key: dict[str, list] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        by_key.setdefault(run.data.tags.get(TAG_KEY, ""), []).append(run)
    return by_key


def _search(client, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string,
                                  max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


@contextmanager
def _quiet():
    """MLflow and alembic log every schema migration at INFO: keep the CLI readable."""
    import mlflow  # noqa: F401  (its import resets the "mlflow" logger to INFO: import first)

    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="mlflow")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


__all__ = ["log_sweep", "compare"]
