"""The SLURM profile (`snakemake --profile slurm --cores 64`), its conda environment, and the
tiny workflow run through a real single-node SLURM (tests/slurm_cluster.py).

Fast tests read the profile as Snakemake does and dry-run the real workflow through it.
The integration test (marked slurm and slow) needs root and Debian's slurm-wlm + munge
(.ci/install-slurm.sh); elsewhere it skips with the reason (under CI=true it fails).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import RESUME_EPOCHS, checkpoint_epoch, resume_workdir, tiny_workdir, unavailable
from slurm_cluster import LocalSlurm, why_unavailable

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "slurm" / "config.yaml"
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
PROFILE_ENV = ("UADFLOWS_SLURM_PARTITION", "UADFLOWS_SLURM_GPU_PARTITION",
               "UADFLOWS_SLURM_ACCOUNT", "UADFLOWS_GPUS", "UADFLOWS_GPU_MODEL")
needs_workflow = pytest.mark.skipif(
    not (ROOT / "Snakefile").exists() or not (ROOT / "configs/test/tiny.yaml").exists(),
    reason="the workflow (Snakefile, configs/test/tiny.yaml) is not there yet",
)


# -- helpers ----------------------------------------------------------------------------
def clean_env(**profile_env: str) -> dict[str, str]:
    """The test process's environment, venv first on PATH, only the given UADFLOWS_* set."""
    env = {k: v for k, v in os.environ.items() if k not in PROFILE_ENV}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"  # the tests are offline: a hub call must fail at once
    return {**env, **profile_env}


def parse_profile(monkeypatch, **profile_env: str) -> dict:
    """The profile as Snakemake reads it (YTE rendered, key=value lists), under that env."""
    from snakemake.profiles import ProfileConfigFileParser

    for name in PROFILE_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in profile_env.items():
        monkeypatch.setenv(name, value)
    with PROFILE.open() as f:
        return dict(ProfileConfigFileParser().parse(f))


def key_values(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def profile_definitions() -> dict:
    """The Python names the profile's `__definitions__` set (GPU_RULES, ...)."""
    namespace: dict = {}
    for statement in yaml.safe_load(PROFILE.read_text())["__definitions__"]:
        exec(statement, namespace)
    return namespace


def profile_gpu_rules() -> list[str]:
    """The rules that get the GPU request."""
    return profile_definitions()["GPU_RULES"]


JOB_HEAD = re.compile(r"^( *)(local)?rule (\w+):$")


def job_blocks(log: str) -> list[dict]:
    """The jobs Snakemake printed ('rule x:' / 'localrule x:' blocks, indented once more
    inside a 'Group job'), with their fields."""
    jobs: list[dict] = []
    indent = ""
    for line in log.splitlines():
        head = JOB_HEAD.match(line)
        if head:
            indent = head.group(1) + "    "
            jobs.append({"rule": head.group(3), "local": bool(head.group(2))})
        elif jobs and line.startswith(indent) and line[len(indent)] != " " and ": " in line:
            key, value = line.strip().split(": ", 1)
            jobs[-1].setdefault(key, value)
    for job in jobs:
        job["resources"] = key_values(job["resources"].split(", ")) if "resources" in job else {}
    return jobs


def run_snakemake(args: list[str], env: dict[str, str], timeout: int = 900) -> str:
    """Run snakemake from the repository root (where `--profile slurm` is found)."""
    p = subprocess.run([SNAKEMAKE, *args], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=timeout)
    out = p.stdout + p.stderr
    if p.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed ({p.returncode}):\n{out[-8000:]}")
    return out


def workflow_args(work: Path) -> list[str]:
    return ["--directory", str(work), "--configfile", str(work / "config.yaml")]


# -- the profile as Snakemake reads it ----------------------------------------------------
def test_profile_defaults_without_any_user_setting(monkeypatch):
    prof = parse_profile(monkeypatch)
    assert prof["executor"] == "slurm"
    assert str(prof["slurm-requeue"]).lower() == "true"  # sbatch --requeue: pre-emption
    assert int(prof["jobs"]) >= 50  # hundreds of GPU jobs: concurrency is `jobs`
    defaults = key_values(prof["default-resources"])
    assert {"runtime", "mem_mb"} <= set(defaults)
    # Partition and account come from the user only: nothing hard-coded.
    assert not {"slurm_partition", "slurm_account"} & set(defaults)
    res = key_values(prof["set-resources"])
    gpu_rules = profile_gpu_rules()
    assert {f"{r}:gpu" for r in gpu_rules} == set(res)
    assert set(res.values()) == {"1"}
    assert "evaluate" not in gpu_rules  # the evaluator is CPU-only


def test_profile_takes_partition_account_and_gpu_model_from_the_environment(monkeypatch):
    prof = parse_profile(
        monkeypatch, UADFLOWS_SLURM_PARTITION="cpu", UADFLOWS_SLURM_GPU_PARTITION="gpu",
        UADFLOWS_SLURM_ACCOUNT="lab42", UADFLOWS_GPU_MODEL="a100", UADFLOWS_GPUS="2",
    )
    defaults = key_values(prof["default-resources"])
    assert defaults["slurm_partition"] == "'cpu'" and defaults["slurm_account"] == "'lab42'"
    res = key_values(prof["set-resources"])
    for rule in profile_gpu_rules():
        assert res[f"{rule}:gpu"] == "2"
        assert res[f"{rule}:gpu_model"] == "'a100'"
        assert res[f"{rule}:slurm_partition"] == "'gpu'"
    # evaluate shares the GPU rules' cluster job (group "run"): their partition, no GPU.
    assert res["evaluate:slurm_partition"] == "'gpu'" and "evaluate:gpu" not in res


def test_profile_gpus_zero_asks_for_no_gpu_and_drops_the_model(monkeypatch):
    prof = parse_profile(monkeypatch, UADFLOWS_GPUS="0", UADFLOWS_GPU_MODEL="a100",
                         UADFLOWS_SLURM_PARTITION="debug")
    res = key_values(prof["set-resources"])
    assert set(res.values()) == {"0", "'debug'"}  # gpu=0 and the partition fallback
    assert not any(k.endswith(":gpu_model") for k in res)


def test_profile_bad_gpu_count_names_the_variable(monkeypatch):
    from configargparse import ConfigFileParserException

    with pytest.raises(ConfigFileParserException, match="UADFLOWS_GPUS='two'"):
        parse_profile(monkeypatch, UADFLOWS_GPUS="two")


def test_resources_become_the_intended_sbatch_flags():
    """The plugin's own translation of our resources (2.8: get_submit_command/set_gres_string)."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    def sbatch(resources: dict) -> str:
        job = SimpleNamespace(resources=Resources(resources), threads=4)
        params = {"run_uuid": "u", "slurm_logfile": "l", "comment_str": "c", "account": "",
                  "partition": f" -p {resources['slurm_partition']}", "workdir": "/w"}
        return get_submit_command(job, params) + set_gres_string(job)

    gpu = sbatch({"slurm_partition": "gpu", "gpu": 1, "gpu_model": "a100", "mem_mb": 8000,
                  "runtime": 120})
    assert "--gpus=a100:1" in gpu and " -p gpu" in gpu
    assert "--mem 8000" in gpu and "-t 120" in gpu and "--cpus-per-task=4" in gpu
    cpu = sbatch({"slurm_partition": "debug", "gpu": 0, "mem_mb": 4000, "runtime": 60})
    assert "--gpus" not in cpu and "--ntasks=1" in cpu


# -- the profile against the real workflow -----------------------------------------------
@needs_workflow
def test_dry_run_through_the_profile_resolves_each_rules_resources(tmp_path):
    """`snakemake --profile slurm --cores 64 -n`: GPU rules get the user's GPU settings,
    CPU rules none, every job a runtime and a memory request."""
    env = clean_env(UADFLOWS_SLURM_PARTITION="cpu", UADFLOWS_SLURM_GPU_PARTITION="gpu",
                    UADFLOWS_GPU_MODEL="a100")
    work = tiny_workdir(tmp_path / "w")
    out = run_snakemake(["--profile", "slurm", "--cores", "64", "-n", *workflow_args(work)], env)
    jobs = job_blocks(out)
    assert jobs, out[-3000:]
    names = profile_definitions()
    gpu_rules, gpu_partition_rules = set(names["GPU_RULES"]), set(names["GPU_PARTITION_RULES"])
    rules = {j["rule"] for j in jobs}
    assert gpu_partition_rules <= rules, f"slurm/config.yaml names rules the workflow lacks: " \
        f"{gpu_partition_rules - rules}"
    for job in jobs:
        res = job["resources"]
        assert "runtime" in res and "mem_mb" in res, job
        if job["rule"] in gpu_rules:
            assert (res.get("gpu"), res.get("gpu_model")) == ("1", "a100"), job
        else:
            assert "gpu" not in res and "gpu_model" not in res, job
        partition = "gpu" if job["rule"] in gpu_partition_rules else "cpu"
        assert res.get("slurm_partition") == partition, job


PAPER_CONFIGS = sorted((ROOT / "configs/paper").glob("*.yaml"))


@needs_workflow
@pytest.mark.slow  # 12-25 s each on a loaded 2-core machine
@pytest.mark.parametrize("config", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_profile_plans_a_paper_config(config, tmp_path):
    """The documented command, dry: `snakemake --profile slurm --cores 64 -n --configfile
    configs/paper/<x>.yaml`, from the repository root (the outputs' folder: a temp dir)."""
    out = run_snakemake(["--profile", "slurm", "--cores", "64", "-n", "--configfile",
                         str(config), "--directory", str(tmp_path)], clean_env())
    jobs = job_blocks(out)
    counts = {rule: sum(j["rule"] == rule for j in jobs) for rule in {j["rule"] for j in jobs}}
    n_runs = counts.get("evaluate", 0)
    assert n_runs >= 30, counts  # every category of the three datasets, at least
    assert counts["train"] == counts["score"] == n_runs and counts["extract"] >= 1, counts
    # Memory follows the extractor (backbone, input size): not one figure for all of them.
    mem = {j["wildcards"].split("extractor=")[1].rsplit("_", 1)[0]: int(j["resources"]["mem_mb"])
           for j in jobs if j["rule"] == "extract"}
    assert len(mem) == 1 or len(set(mem.values())) > 1, mem


# -- conda environments --------------------------------------------------------------------
CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base"}


def _package_name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_conda_env_holds_every_dependency_of_the_package():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    env = yaml.safe_load((ROOT / "envs/uadflows.yaml").read_text())
    assert "conda-forge" in env["channels"]
    conda = {_package_name(d) for d in env["dependencies"] if isinstance(d, str)}
    pip = {_package_name(d) for d in env["dependencies"] if isinstance(d, dict)
           for d in d["pip"]}
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    missing = [d for d in deps
               if CONDA_NAMES.get(_package_name(d), _package_name(d)) not in conda | pip]
    assert not missing, f"envs/uadflows.yaml lacks {missing} (pyproject.toml dependencies)"
    assert {"python", "pip", "setuptools"} <= conda  # the post-deploy editable install


def _fake_python(tmp_path: Path) -> Path:
    """A `python` that records its arguments instead of installing anything."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/python-args\n')
    fake.chmod(0o755)
    return bindir


def test_post_deploy_installs_the_package_from_the_repository_root(tmp_path):
    bindir = _fake_python(tmp_path)
    p = subprocess.run(["bash", str(ROOT / "envs/uadflows.post-deploy.sh")], cwd=ROOT,
                       env={"PATH": f"{bindir}:/usr/bin:/bin"}, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    args = (tmp_path / "python-args").read_text().split()
    assert args[:3] == ["-m", "pip", "install"]
    assert "--no-deps" in args and args[-2:] == ["--editable", str(ROOT)]


def test_post_deploy_outside_the_repository_fails_with_a_clear_message(tmp_path):
    bindir = _fake_python(tmp_path)
    p = subprocess.run(["bash", str(ROOT / "envs/uadflows.post-deploy.sh")], cwd=tmp_path,
                       env={"PATH": f"{bindir}:/usr/bin:/bin"}, capture_output=True, text=True)
    assert p.returncode == 1
    assert "UADFLOWS_ROOT" in p.stderr and str(tmp_path) in p.stderr
    assert not (tmp_path / "python-args").exists()


# -- when the real SLURM test can run ------------------------------------------------------
def test_local_slurm_needs_root(monkeypatch):
    import slurm_cluster

    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 1000)
    assert "needs root" in why_unavailable()


def test_local_slurm_needs_the_binaries(monkeypatch):
    import slurm_cluster

    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 0)
    monkeypatch.setattr(slurm_cluster.shutil, "which",
                        lambda name: None if name in ("slurmd", "munged") else f"/usr/bin/{name}")
    reason = why_unavailable()
    assert "slurmd, munged" in reason and ".ci/install-slurm.sh" in reason


def test_local_slurm_leaves_a_real_installation_alone(monkeypatch, tmp_path):
    import slurm_cluster

    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=production\n")
    monkeypatch.setattr(slurm_cluster, "SLURM_CONF", conf)
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 0)
    monkeypatch.setattr(slurm_cluster.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert "is not ours" in why_unavailable()
    with pytest.raises(RuntimeError, match="is not ours"):
        LocalSlurm(tmp_path).start()
    assert conf.read_text() == "ClusterName=production\n"


# -- a real SLURM ------------------------------------------------------------------------
# --cores of both runs: it caps each job's threads, and the thread count can change float
# results, so the SLURM run uses the local run's (tests/test_workflow.py runs with 2).
CORES = "2"


@pytest.fixture(scope="module")
def local_slurm(tmp_path_factory):
    reason = why_unavailable()
    unavailable(f"no local SLURM: {reason}" if reason else None)
    # Room for two 2-thread jobs at once, as on a cluster with more than one node.
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"), cpus=2 * int(CORES))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def local_run(request, tmp_path_factory) -> Path:
    """The tiny workflow run locally: the shared run if conftest.py offers one."""
    try:
        return Path(request.getfixturevalue("tiny_workflow"))
    except pytest.FixtureLookupError:
        work = tiny_workdir(tmp_path_factory.mktemp("local") / "w")
        run_snakemake(["--cores", CORES, *workflow_args(work)], clean_env())
        return work


# Measured, not computed: timings, job start/end times, memory peaks, MLflow's run ids and the
# commit a job ran at (provenance) differ between runs.
MEASURED = re.compile(r"seconds$|_per_s$|rss_mb$|run_id$|^started$|^ended$|git_commit$")


def _canon(value):
    """Measured keys dropped; floats by repr and arrays by bytes, so NaN equals NaN."""
    import numpy as np

    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items() if not MEASURED.search(str(k))}
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, float):
        return repr(value)
    return value


def computed_content(path: Path):
    """What a result file says, measured quantities left out."""
    import json

    import numpy as np
    import pandas as pd

    if path.suffix == ".json":
        return _canon(json.loads(path.read_text()))
    if path.suffix == ".csv":
        df = pd.read_csv(path)
        return _canon(df[[c for c in df.columns if not MEASURED.search(c)]].to_dict("list"))
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k: _canon(z[k]) for k in z.files if not MEASURED.search(k)}
    if path.suffix == ".pt":
        import torch

        return _canon(torch.load(path, map_location="cpu", weights_only=True))
    if path.name.startswith("cost_"):  # the report's table of run times and memory
        return None
    return path.read_bytes()


def result_files(work: Path) -> dict[str, Path]:
    """Every output of a run, logs and benchmarks (timings, job ids) aside."""
    out = {}
    for path in (work / "results").rglob("*"):
        rel = path.relative_to(work / "results")
        if path.is_file() and rel.parts[0] not in ("logs", "benchmarks"):
            out[str(rel)] = path
    return out


@needs_workflow
@pytest.mark.slurm
@pytest.mark.slow
def test_tiny_workflow_through_slurm_equals_a_local_run(local_slurm, local_run, tmp_path):
    """`snakemake --profile slurm` on a real SLURM: every non-local job is one sbatch job
    (seen by slurmctld, its id in the job's own log), the outputs equal a local run's."""
    work = tiny_workdir(tmp_path / "slurm")
    env = clean_env(UADFLOWS_SLURM_PARTITION=local_slurm.partition, UADFLOWS_GPUS="0")
    started = time.monotonic()
    log = run_snakemake([
        "--profile", "slurm", "--cores", CORES, *workflow_args(work),
        # This cluster keeps no accounting (sacct disabled): poll squeue, and soon.
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "1",
        "--seconds-between-status-checks", "1",
    ], env)
    wall_s = time.monotonic() - started

    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    slurm_jobs = [j for j in local_slurm.jobs() if j.name == run_id]
    submitted = dict(re.findall(r"Job (\S+) has been submitted with SLURM jobid (\d+)", log))
    jobs = job_blocks(log)
    remote = [j for j in jobs if not j["local"]]
    local_rules = {j["rule"] for j in jobs if j["local"]}
    print(f"SLURM run: {wall_s:.0f} s, {len(slurm_jobs)} sbatch jobs for {len(remote)} rule "
          f"jobs; {len(jobs) - len(remote)} local jobs")

    # Every job slurmctld ran for this run finished, and is one the plugin submitted.
    assert slurm_jobs and {j.state for j in slurm_jobs} == {"COMPLETED"}, slurm_jobs
    assert {j.job_id for j in slurm_jobs} == set(submitted.values())
    # The GPU rules and the evaluator ran on the cluster; the local rules never did.
    assert set(profile_gpu_rules()) | {"evaluate"} <= {j["rule"] for j in remote}
    assert local_rules and not any(
        re.match(rf"rule_({'|'.join(local_rules)})(_wildcards_|$)", j.comment)
        for j in slurm_jobs), slurm_jobs
    # Each cluster rule job ran inside one of this run's SLURM jobs: its log says which.
    ids_in_logs = set()
    for job in remote:
        text = (work / job["log"]).read_text()
        found = re.findall(r"^SLURM_JOB_ID=(\d+)$", text, flags=re.M)
        assert len(found) == 1 and found[0] in submitted.values(), (job, text[-2000:])
        ids_in_logs.add(found[0])
    assert ids_in_logs == set(submitted.values())

    # The same outputs as the local run's, measured costs (timings, memory) aside.
    mine, theirs = result_files(work), result_files(local_run)
    assert mine.keys() == theirs.keys()
    differ = [rel for rel in sorted(mine)
              if computed_content(mine[rel]) != computed_content(theirs[rel])]
    assert not differ, f"outputs differ from the local run's: {differ}"


# -- pre-emption and cancellation on the real SLURM (issue 20) -----------------------------
SLURM_ARGS = ["--profile", "slurm", "--cores", CORES,
              # no accounting here (sacct disabled): poll squeue, and soon
              "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
              "--seconds-between-status-checks", "1"]


def _train_log(work: Path) -> Path:
    return work / "results/logs/train/demo/brick/fastflow/seed0.log"


def _wait_for_checkpoint(work: Path, proc: subprocess.Popen, epoch: int = 1) -> str:
    """Wait until the run's training has checkpointed ``epoch``; its SLURM job id."""
    deadline = time.monotonic() + 900
    while checkpoint_epoch(work) < epoch:
        assert proc.poll() is None, "snakemake ended before training checkpointed"
        assert time.monotonic() < deadline, "no training checkpoint after 900 s"
        time.sleep(0.05)
    return re.search(r"^SLURM_JOB_ID=(\d+)$", _train_log(work).read_text(), re.M).group(1)


def _same_as_reference(work: Path, reference: Path) -> None:
    mine, theirs = result_files(work), result_files(reference)
    assert mine.keys() == theirs.keys()
    differ = [rel for rel in sorted(mine)
              if computed_content(mine[rel]) != computed_content(theirs[rel])]
    assert not differ, f"outputs differ from an uninterrupted run's: {differ}"


@needs_workflow
@pytest.mark.slurm
@pytest.mark.slow
def test_requeued_training_job_resumes_from_its_checkpoint(local_slurm, resume_reference,
                                                           tmp_path):
    """`scontrol requeue` of the running train/score/evaluate job after its first checkpoint
    (what pre-emption with requeue does): SLURM stops it (SIGTERM: the training checkpoints
    the epoch it is in) and starts it again under the same job id; the training resumes
    (its log says so), Snakemake waits it out, and the outputs equal an uninterrupted run's."""
    work = resume_workdir(tmp_path / "requeued")
    env = clean_env(UADFLOWS_SLURM_PARTITION=local_slurm.partition, UADFLOWS_GPUS="0")
    proc = subprocess.Popen([SNAKEMAKE, *SLURM_ARGS, *workflow_args(work)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        job_id = _wait_for_checkpoint(work, proc)
        requeued = time.monotonic()
        p = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        resumed_after = None
        while proc.poll() is None and resumed_after is None:
            found = re.search(r"resuming after epoch \d+", _train_log(work).read_text()
                              if _train_log(work).exists() else "")
            resumed_after = time.monotonic() - requeued if found else None
            time.sleep(0.2)
        log = proc.communicate(timeout=1200)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log[-8000:]
    train_log = _train_log(work).read_text()
    resumed = int(re.search(rf"resuming after epoch (\d+)/{RESUME_EPOCHS}", train_log).group(1))
    assert resumed >= 1 and f"SLURM_JOB_ID={job_id}" in train_log, train_log[-3000:]
    assert re.search(rf"Requeuing JobId={job_id}\b", local_slurm.ctld_log()), \
        local_slurm.log_tail()
    assert [j.state for j in local_slurm.jobs() if j.job_id == job_id] == ["COMPLETED"]
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True,
                           text=True).stdout
    assert "Requeue=1" in shown and "Restarts=1" in shown, shown  # the profile's --requeue
    print(f"requeued job {job_id}: training resumed after epoch {resumed}/{RESUME_EPOCHS}, "
          f"{resumed_after:.0f} s after `scontrol requeue`")
    _same_as_reference(work, resume_reference)


@needs_workflow
@pytest.mark.slurm
@pytest.mark.slow
def test_cancelled_job_then_the_same_command_redoes_only_it(local_slurm, resume_reference,
                                                            tmp_path):
    """The submit host's session is lost mid-training (SIGKILL to Snakemake's process group)
    and the orphaned job is cancelled with `scancel`, as docs/slurm.md says; `--unlock` and
    the same command then resubmit only the incomplete run job (not the finished feature
    extraction), whose training resumes from its checkpoint, and the outputs equal an
    uninterrupted run's."""
    work = resume_workdir(tmp_path / "cancelled")
    env = clean_env(UADFLOWS_SLURM_PARTITION=local_slurm.partition, UADFLOWS_GPUS="0")
    cmd = [SNAKEMAKE, *SLURM_ARGS, *workflow_args(work)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    job_id = _wait_for_checkpoint(work, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    p = subprocess.run(["scancel", job_id], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    deadline = time.monotonic() + 120
    while [j.state for j in local_slurm.jobs() if j.job_id == job_id] != ["CANCELLED"]:
        assert time.monotonic() < deadline, local_slurm.jobs()
        time.sleep(0.5)
    cancelled_at = checkpoint_epoch(work)
    features = sorted((work / "results/features").rglob("*.npy"))
    before = {f: f.stat().st_mtime_ns for f in features}

    run_snakemake([*cmd[1:], "--unlock"], env)
    log = run_snakemake(cmd[1:], env)
    submitted = re.findall(r"Job \S+ has been submitted with SLURM jobid (\d+)", log)
    rules = {j["rule"] for j in job_blocks(log)}
    assert len(submitted) == 1, log[-6000:]  # the run group alone, not the extraction
    assert rules == {"train", "score", "evaluate", "aggregate", "report", "mlflow", "all"}, rules
    assert features and {f: f.stat().st_mtime_ns for f in features} == before
    train_log = _train_log(work).read_text()
    assert f"SLURM_JOB_ID={submitted[0]}" in train_log
    resumed = int(re.search(rf"resuming after epoch (\d+)/{RESUME_EPOCHS}", train_log).group(1))
    assert resumed >= cancelled_at >= 1, train_log[-3000:]
    print(f"job {job_id} cancelled after epoch {cancelled_at}; resubmitted as {submitted[0]}, "
          f"resumed after epoch {resumed}")
    _same_as_reference(work, resume_reference)
