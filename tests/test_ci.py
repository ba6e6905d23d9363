"""CI cannot skip what it claims: under CI=true a missing tool or data set fails the test
that needs it (conftest.unavailable), and `.ci/run` stops when an install fails."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from _pytest.outcomes import Failed, Skipped

from conftest import unavailable

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("ci", ["true", "1"])
def test_missing_tool_fails_under_ci(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(Failed, match="CI=true and pdflatex not on PATH"):
        unavailable("pdflatex not on PATH")


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_missing_tool_skips_elsewhere(monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(Skipped, match="no local SLURM"):
        unavailable("no local SLURM: needs root")
    unavailable(None)  # nothing missing: the test goes on


def _fake_ci_checkout(tmp_path: Path, slurm_install_rc: int, apt_rc: int) -> tuple[Path, dict]:
    """A copy of .ci/run beside a stand-in install script, with `id`, `apt-get`, `make`
    and `command -v pdflatex` answered by stand-ins that record their calls."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci/run", repo / ".ci/run")
    (repo / ".ci/install-slurm.sh").write_text(f"echo slurm >> {tmp_path}/calls\nexit {slurm_install_rc}\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, body in (("id", "echo 0"), ("apt-get", f"echo apt-get \"$@\" >> {tmp_path}/calls\n"
                                                     f"exit {apt_rc}"),
                       ("make", f"echo make \"$@\" >> {tmp_path}/calls")):
        (bindir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bindir / name).chmod(0o755)
    # Only the stand-ins and the shell's basics: no real pdflatex on this PATH.
    basics = tmp_path / "basics"
    basics.mkdir()
    for tool in ("bash", "sh", "dirname", "cat"):
        (basics / tool).symlink_to(shutil.which(tool))
    return repo, {"PATH": f"{bindir}:{basics}", "HOME": str(tmp_path)}


@pytest.mark.parametrize("slurm_rc, apt_rc, message", [
    (1, 0, "SLURM install failed"),
    (0, 1, "texlive install failed"),
])
def test_ci_run_stops_when_an_install_fails(tmp_path, slurm_rc, apt_rc, message):
    repo, env = _fake_ci_checkout(tmp_path, slurm_rc, apt_rc)
    p = subprocess.run(["bash", str(repo / ".ci/run")], env=env, capture_output=True, text=True)
    assert p.returncode != 0 and message in p.stderr, p.stdout + p.stderr
    assert "make" not in (tmp_path / "calls").read_text()  # no test run that would skip


def test_ci_run_runs_the_tests_when_the_installs_succeed(tmp_path):
    repo, env = _fake_ci_checkout(tmp_path, 0, 0)
    p = subprocess.run(["bash", str(repo / ".ci/run")], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == "slurm" and calls[-1] == "make test"
