"""The wheel holds everything the package reads at run time: built, installed into a fresh
virtual environment (not editable), and run from there."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# No PYTHONPATH: a source tree on it would be what gets imported (and installed over)
ENV = {**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")},
       "HF_HUB_OFFLINE": "1"}


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV, **kw)
    assert p.returncode == 0, f"{cmd}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_source_tree(tmp_path):
    # built from a copy: setuptools leaves build/ and egg-info beside the sources it builds
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(wheels), str(source)])
    (wheel,) = wheels.glob("uadflows-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "-q",
          "--no-deps", str(wheel)])
    # then the dependencies: this environment's (a .pth after the venv's own site-packages),
    # so nothing big is installed; this environment's editable uadflows is not on that path
    (purelib,) = venv.glob("lib/python*/site-packages")
    assert (purelib / "uadflows" / "cli.py").is_file()
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    where = _run([str(venv / "bin/python"), "-c", "import uadflows; print(uadflows.__file__)"],
                 cwd=work).stdout.strip()
    assert Path(where).is_relative_to(purelib), where
    _run([str(venv / "bin/uadflows"), "--help"], cwd=work)
    p = _run([str(venv / "bin/uadflows"), "check-config", "config.yaml"], cwd=work)
    from uadflows.config import load_plan, read_config

    runs = len(load_plan(read_config(ROOT / "config.yaml"), check_roots=False).runs)
    assert f"{runs} runs" in p.stdout, p.stdout
    schema = _run([str(venv / "bin/uadflows"), "schema"], cwd=work).stdout
    assert schema == (ROOT / "workflow/schemas/config.schema.yaml").read_text()
    ref = _run([str(venv / "bin/python"), "-c", "from uadflows.reference import published; print(len(published()))"],
               cwd=work)
    assert int(ref.stdout) > 0
