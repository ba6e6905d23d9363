"""Fault suite (issue 11): a training process killed with SIGKILL mid-epoch, then rerun.

The other faults are tested beside the code they hit: a truncated feature cache, corrupted
checkpoints and an injected NaN loss in test_pipeline.py; each bad-config case in
test_config.py; a second workflow run that changes nothing in test_workflow.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from conftest import tiny_spec
from uadflows.train import train

BIN = Path(sys.executable).parent


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
