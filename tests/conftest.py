"""Shared fixtures: a tiny demo category with its index and feature cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Tests run offline: a hub download must fail at once, not after a timeout.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY_EXTRACTOR = {"name": "tf_efficientnet_lite0", "image_size": 64, "pretrained": True}


@pytest.fixture(scope="session")
def tiny_category(tmp_path_factory):
    """Demo category 'brick' at 64 px: index CSV and feature cache (paths)."""
    from uadflows.data import index_category, write_index
    from uadflows.data.demo import make_demo
    from uadflows.features import extract

    base = tmp_path_factory.mktemp("tiny")
    root = make_demo(base / "demo", ("brick",), seed=0, image_size=64, n_train=8,
                     n_test_good=4, n_test_defect=4)
    index = base / "index" / "brick.csv"
    write_index(index_category("demo", root, "brick"), index)
    features = base / "features" / "brick"
    extract(index, features, TINY_EXTRACTOR, batch_size=8, device="cpu")
    return {"root": root, "index": index, "features": features, "base": base}


def tiny_spec(seed: int = 0, epochs: int = 3, method: str = "fastflow", **params):
    """The job spec of a tiny run on ``tiny_category`` (lr: the method's recipe)."""
    from uadflows.methods import recipe
    from uadflows.spec import JobSpec, TrainOptions

    return JobSpec(
        sweep="test", dataset="demo", format="demo", category="brick", model=method, method=method,
        backbone="tf_efficientnet_lite0", seed=seed, image_size=(64, 64), extractor="x",
        params=params, device="cpu",
        train=TrainOptions(epochs=epochs, batch_size=4, lr=recipe(method)["lr"], checkpoint_every=1),
    )


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    cmd = [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    if check and p.returncode != 0:
        logs = "\n".join(f"== {f}\n{f.read_text()[-3000:]}" for f in workdir.rglob("logs/**/*.log"))
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{p.stdout[-4000:]}\n{p.stderr[-6000:]}\n{logs}")
    return p


@pytest.fixture(scope="session")
def tiny_workflow(tmp_path_factory):
    work = tmp_path_factory.mktemp("workflow")
    shutil.copy(ROOT / "configs/test/tiny.yaml", work / "config.yaml")
    snakemake(work)
    return work
