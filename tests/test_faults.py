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

from conftest import tiny_spec
from uadflows.train import STATE_FILE, train

BIN = Path(sys.executable).parent


def _train_cmd(spec, features, out):
    return [str(BIN / "uadflows"), "train", "--spec", json.dumps(spec), "--features", str(features),
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
        if state.exists() and torch.load(state, weights_only=False)["epoch"] >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed:\n" + proc.stdout.read()
    time.sleep(0.1)  # somewhere inside a later epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(state, weights_only=False)["epoch"]
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
    a = torch.load(out / "model.pt", weights_only=False)
    b = torch.load(tmp_path / "straight" / "model.pt", weights_only=False)
    assert a["summary"]["epochs"] == b["summary"]["epochs"] == 20
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
    return torch.load(out / "model.pt", weights_only=False)


def _every_10(spec):
    spec["train"]["checkpoint_every"] = 10
    return spec


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
    log = []
    for line in proc.stdout:
        log.append(line)
        if "epoch 2/12" in line:  # past the start, before the first periodic checkpoint
            proc.send_signal(getattr(signal, signame))
    proc.wait(timeout=300)
    log = "".join(log)
    signum = getattr(signal, signame)
    assert proc.returncode == 128 + signum, log[-3000:]
    stopped = int(re.search(rf"{signame} received, checkpoint written after epoch (\d+)/12",
                            log).group(1))
    assert 2 <= stopped < 10, log[-3000:]  # a periodic checkpoint would have said 0 or 10
    assert torch.load(out / STATE_FILE, weights_only=False)["epoch"] == stopped
    assert not (out / "model.pt").exists()

    rerun = subprocess.run(_train_cmd(spec, tiny_category["features"], out), env=env,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"resuming after epoch {stopped}/12" in rerun.stdout
    a = torch.load(out / "model.pt", weights_only=False)
    assert a["summary"]["epochs"] == 12
    assert all(torch.equal(a["model"][k], straight_12["model"][k]) for k in straight_12["model"])
