"""Fault suite (issues 11, 20): a training process killed with SIGKILL mid-epoch, or stopped
by a scheduler's signal, then rerun.

The other faults are tested beside the code they hit: a truncated feature cache, corrupted
checkpoints and an injected NaN loss in test_pipeline.py; each bad-config case in
test_config.py; a second workflow run that changes nothing in test_workflow.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import RESUME_EPOCHS, checkpoint_epoch, resume_workdir, tiny_spec
from uadflows.train import STATE_FILE, train

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def _train_cmd(spec, features, out):
    spec.save(out.parent / f"{out.name}.spec.json")
    return [str(BIN / "uadflows"), "train", "--spec", str(out.parent / f"{out.name}.spec.json"), "--features", str(features),
            "--out", str(out), "--threads", "1"]


def test_kill9_mid_epoch_then_rerun_equals_uninterrupted(tiny_category, tmp_path):
    spec = tiny_spec(epochs=20)
    out = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(_train_cmd(spec, tiny_category["features"], out), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = out / "train_state.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and torch.load(state, weights_only=True)["epoch"] >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed:\n" + proc.stdout.read()
    time.sleep(0.1)  # somewhere inside a later epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(state, weights_only=True)["epoch"]
    assert 3 <= killed_at < 20
    assert not (out / "model.pt").exists()  # nothing that looks complete

    rerun = subprocess.run(_train_cmd(spec, tiny_category["features"], out), env=env,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "resuming after epoch" in rerun.stdout
    assert not list(out.glob(".*.tmp"))  # a write cut short by the kill is cleared away

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses: same kernels, same rounding
    try:
        train(spec, tiny_category["features"], tmp_path / "straight")
    finally:
        torch.set_num_threads(threads)
    a = torch.load(out / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    assert json.loads((out / "summary.json").read_text())["epochs"] == 20
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])


@pytest.fixture(scope="module")
def straight_12(tiny_category, tmp_path_factory):
    """An uninterrupted 12-epoch run (one thread, as the subprocesses)."""
    spec = _every_10(tiny_spec(epochs=12))
    out = tmp_path_factory.mktemp("straight12")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(spec, tiny_category["features"], out)
    finally:
        torch.set_num_threads(threads)
    return torch.load(out / "model.pt", weights_only=True)


def _every_10(spec):
    return spec.model_copy(update={"train": spec.train.model_copy(update={"checkpoint_every": 10})})


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR1"])
def test_scheduler_signal_writes_a_checkpoint_then_the_rerun_resumes(tiny_category, tmp_path,
                                                                    straight_12, signame):
    """SLURM's SIGTERM (pre-emption, requeue, scancel) or SIGUSR1 (`sbatch --signal`, before
    the time limit): the epoch in progress ends with a checkpoint, not the last periodic one
    (every 10 epochs here), the process exits with 128 + the signal, the rerun resumes."""
    spec = _every_10(tiny_spec(epochs=12))
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(_train_cmd(spec, tiny_category["features"], out), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log, sent = [], False
    for line in proc.stdout:
        log.append(line)
        # past the start, before the first periodic checkpoint; once: the "stopped ...
        # after epoch 2/12" line must not send a second signal to the exiting process
        if "epoch 2/12" in line and not sent:
            proc.send_signal(getattr(signal, signame))
            sent = True
    proc.wait(timeout=300)
    log = "".join(log)
    signum = getattr(signal, signame)
    assert proc.returncode == 128 + signum, log[-3000:]
    stopped = int(re.search(rf"{signame} received, checkpoint written after epoch (\d+)/12",
                            log).group(1))
    assert 2 <= stopped < 10, log[-3000:]  # a periodic checkpoint would have said 0 or 10
    assert torch.load(out / STATE_FILE, weights_only=True)["epoch"] == stopped
    assert not (out / "model.pt").exists()

    rerun = subprocess.run(_train_cmd(spec, tiny_category["features"], out), env=env,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"resuming after epoch {stopped}/12" in rerun.stdout
    a = torch.load(out / "model.pt", weights_only=True)
    assert json.loads((out / "summary.json").read_text())["epochs"] == 12
    assert all(torch.equal(a["model"][k], straight_12["model"][k]) for k in straight_12["model"])


# -- through Snakemake ------------------------------------------------------------------
@pytest.mark.slow
def test_snakemake_process_group_killed_mid_training_then_rerun(resume_reference, tmp_path):
    """A lost session: SIGKILL to Snakemake's whole process group (Snakemake and the training
    it runs) after a few epochs. The same command, run again (after `--unlock`, which a
    killed Snakemake needs), resumes training from its checkpoint, redoes nothing that was
    complete, and ends with the outputs of an uninterrupted run."""
    from test_slurm import computed_content, job_blocks, result_files

    work = resume_workdir(tmp_path / "killed")
    cmd = [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(work),
           "--configfile", str(work / "config.yaml"), "--cores", "2", "--rerun-incomplete"]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own group, as a login shell's job
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None and checkpoint_epoch(work) < 2:
        time.sleep(0.05)
    assert proc.poll() is None, "the workflow ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint_epoch(work)
    assert 2 <= killed_at < RESUME_EPOCHS
    features = sorted((work / "results/features").rglob("*.npy"))
    before = {p: p.stat().st_mtime_ns for p in features}

    subprocess.run([*cmd, "--unlock"], env=env, check=True, capture_output=True)
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-5000:]
    log = rerun.stdout + rerun.stderr
    redone = {j["rule"] for j in job_blocks(log)}
    assert redone == {"train", "score", "evaluate", "aggregate", "report", "mlflow", "all"}, redone
    assert features and {p: p.stat().st_mtime_ns for p in features} == before
    train_log = (work / "results/logs/train/demo/brick/fastflow/seed0.log").read_text()
    resumed = int(re.search(rf"resuming after epoch (\d+)/{RESUME_EPOCHS}", train_log).group(1))
    assert resumed >= killed_at, train_log[-2000:]
    print(f"killed after epoch {killed_at}, resumed after epoch {resumed}")

    mine, theirs = result_files(work), result_files(resume_reference)
    assert mine.keys() == theirs.keys()
    differ = [rel for rel in sorted(mine)
              if computed_content(mine[rel]) != computed_content(theirs[rel])]
    assert not differ, f"outputs differ from an uninterrupted run's: {differ}"
