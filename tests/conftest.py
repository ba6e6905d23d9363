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
# Under `make test`'s pytest-xdist workers each worker computes on one thread: 4 workers of
# 2 threads each on a 2-core machine made the in-process torch tests 10-40x slower.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))

TINY_EXTRACTOR = {"name": "tf_efficientnet_lite0", "image_size": 64, "pretrained": True}

# The shared data beside the clone (CI copies shared/ next to its fresh clone);
# UADFLOWS_SHARED points elsewhere, e.g. from a git worktree.
SHARED = Path(os.environ.get("UADFLOWS_SHARED") or ROOT.parent / "shared")
MPDD = SHARED / "data" / "mpdd_metal_plate"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str | None) -> None:
    """Skip the calling test because ``reason`` (SLURM, pdflatex, the shared data...) is
    missing; under CI=true fail instead: CI installs all of them, so a skip would hide a
    broken install behind a green run. ``None``: nothing is missing, carry on."""
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"CI=true and {reason}: CI must run this test, not skip it", pytrace=False)
    pytest.skip(reason)


def needs_pdflatex() -> None:
    unavailable(None if shutil.which("pdflatex") else
                "pdflatex not on PATH (install texlive-latex-recommended texlive-latex-base)")


def needs_mpdd() -> Path:
    unavailable(None if MPDD.is_dir() else f"real MPDD category not present at {MPDD}")
    return MPDD


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
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=2400)
    if check and p.returncode != 0:
        logs = "\n".join(f"== {f}\n{f.read_text()[-3000:]}" for f in workdir.rglob("logs/**/*.log"))
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{p.stdout[-4000:]}\n{p.stderr[-6000:]}\n{logs}")
    return p


def shared_once(tmp_path_factory, name: str, build) -> Path:
    """A folder that ``build(folder)`` fills once per test session. Under pytest-xdist
    (``make test``) the workers share it: the first to take the lock builds it in the
    session's common temporary folder, the others wait and reuse it (or fail at once with
    the first one's error). The tests that use it only read it."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # common to every worker of this session
    folder, failed = base / f"shared-{name}", base / f"shared-{name}.failed"
    with FileLock(str(base / f"shared-{name}.lock")):
        if failed.exists():
            pytest.fail(f"shared fixture {name} failed in another worker:\n{failed.read_text()}",
                        pytrace=False)
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            try:
                build(folder)
            except BaseException as e:
                failed.write_text(f"{type(e).__name__}: {e}")
                raise
            (folder / ".built").touch()
    return folder


# A user's folder dataset without ground_truth/ (issue 15), added to every tiny workflow run:
# each method runs through it (image metrics only), and aggregate and report face a sweep
# that mixes masked and mask-less runs. Written by make_tiny in the work folder, not kept in
# configs/test/tiny.yaml: that file is also planned from the repository root (check-config,
# test_config.py), where a relative root written per work folder does not exist.
MASKLESS = {"format": "folder", "root": "data/parts", "categories": ["widget"]}


def tiny_workdir(path: Path) -> Path:
    """A work folder for the tiny workflow: configs/test/tiny.yaml plus the mask-less
    'parts' dataset, its images written here (64 px, 6 train, 2 good + 2 defective test)."""
    import yaml

    from uadflows.data.tiny import make_tiny

    path.mkdir(parents=True, exist_ok=True)
    make_tiny("folder", path / MASKLESS["root"], tuple(MASKLESS["categories"]), size=(64, 64),
              n_train=6, n_test_good=2, n_test_defect=2, ground_truth=False)
    config = yaml.safe_load((ROOT / "configs/test/tiny.yaml").read_text())
    config["datasets"]["parts"] = MASKLESS
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _run_tiny_workflow(work: Path) -> None:
    snakemake(tiny_workdir(work))


@pytest.fixture(scope="session")
def tiny_workflow(tmp_path_factory):
    """The tiny workflow run once (for all workers), inspected by many tests."""
    return shared_once(tmp_path_factory, "workflow", _run_tiny_workflow)


RESUME_EPOCHS = 6
RESUME_RUN = "results/runs/demo/brick/fastflow/seed0"


def resume_workdir(path: Path) -> Path:
    """The tiny workflow cut to one run (brick) of RESUME_EPOCHS epochs, a checkpoint after
    each: long enough to be interrupted mid-training (the fault tests of issue 20)."""
    import yaml

    config = yaml.safe_load((ROOT / "configs/test/tiny.yaml").read_text())
    config["datasets"]["demo"]["categories"] = ["brick"]
    config["models"] = {"fastflow": {**config["models"]["fastflow"], "epochs": RESUME_EPOCHS,
                                     "checkpoint_every": 1}}  # one run: the fault tests count jobs
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def checkpoint_epoch(work: Path) -> int:
    """The epoch of the run's last training checkpoint (0: none yet)."""
    state = work / RESUME_RUN / "train_state.pt"
    try:
        return int(torch.load(state, map_location="cpu", weights_only=True)["epoch"])
    except (FileNotFoundError, EOFError, RuntimeError):
        return 0


def _run_resume_reference(folder: Path) -> None:
    snakemake(resume_workdir(folder / "reference"))


@pytest.fixture(scope="session")
def resume_reference(tmp_path_factory) -> Path:
    """The resume config run once (for all workers), uninterrupted, by plain
    `snakemake --cores 2`."""
    return shared_once(tmp_path_factory, "resume", _run_resume_reference) / "reference"


def pytest_collection_modifyitems(config, items):
    """For `make test`'s parallel workers (pytest-xdist, --dist loadfile: a file's tests run
    on one worker, so test_slurm.py's tests share its one local cluster, with its fixed
    ports and /etc/slurm/slurm.conf): the SLURM tests and the other end-to-end runs (marked
    slow) are handed out first, so that the longest chains start at once instead of after
    the quick tests."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("slurm") else
               1 if item.get_closest_marker("slow") else 2)  # stable: file order within each
