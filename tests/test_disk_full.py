"""Disk full (issue 20): a write that meets ENOSPC on a small tmpfs (mounted by the test; CI
runs as root) leaves nothing that looks complete and raises an error naming the path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_EXTRACTOR, tiny_spec, unavailable
from uadflows.io import DiskFullError, write_json
from uadflows.train import STATE_FILE, _load_state, train

BIN = Path(sys.executable).parent


@pytest.fixture
def small_disk(tmp_path):
    """mount(size_bytes) -> a fresh tmpfs of that size; all unmounted at the end."""
    mounts = []

    def mount(size: int) -> Path:
        point = tmp_path / f"disk{len(mounts)}"
        point.mkdir()
        if os.geteuid() != 0:
            unavailable("mounting a small tmpfs needs root")
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            unavailable(f"cannot mount a tmpfs here: {p.stderr.strip()}")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", str(point)], check=True)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*"))


def test_json_write_on_a_full_disk_keeps_the_earlier_file(small_disk):
    disk = small_disk(64 * 1024)
    target = disk / "results" / "meta.json"
    write_json(target, {"version": 1})
    with pytest.raises(DiskFullError, match=f"^{target}: no space left on device") as e:
        write_json(target, {"blob": "x" * 200_000})
    assert e.value.filename == str(target)
    assert json.loads(target.read_text()) == {"version": 1}  # the earlier version, whole
    assert leftovers(disk) == ["meta.json", "results"]  # no half-written temporary file


def test_checkpoint_write_on_a_full_disk_names_it_and_keeps_the_last_one(tiny_category, tmp_path,
                                                                       small_disk):
    """The disk fills between two checkpoints: the second one fails, the first stays whole
    (a rerun resumes from it), and there is no model.pt or history.csv."""
    spec = tiny_spec(epochs=3)
    roomy = tmp_path / "roomy"
    train(spec, tiny_category["features"], roomy, stop_after_epoch=1)
    size = (roomy / STATE_FILE).stat().st_size
    out = small_disk(int(size * 1.5) // 4096 * 4096 + 4096)  # room for one checkpoint only
    (out / STATE_FILE).write_bytes((roomy / STATE_FILE).read_bytes())

    with pytest.raises(DiskFullError, match=f"^{out / STATE_FILE}: no space left on device"):
        train(spec, tiny_category["features"], out)
    assert leftovers(out) == [STATE_FILE]
    assert _load_state(out / STATE_FILE, spec)["epoch"] == 1


def test_feature_extraction_on_a_full_disk_is_an_error_not_a_crash(tiny_category, small_disk):
    """The cache's arrays are memory-mapped: without reserving their blocks first, writing
    into them on a full disk kills the process with SIGBUS and no message."""
    disk = small_disk(64 * 1024)
    assert json.loads((tiny_category["features"] / "meta.json").read_text())["bytes"] > 64 * 1024
    out = disk / "features" / "brick"
    p = subprocess.run([str(BIN / "uadflows"), "extract", "--index", str(tiny_category["index"]),
                        "--extractor", json.dumps(TINY_EXTRACTOR), "--device", "cpu",
                        "--threads", "1", "--out", str(out)],
                       env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 1, (p.returncode, p.stderr[-2000:])
    assert f"error: {out}: no space left on device" in p.stderr, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    assert leftovers(disk) == ["features"]  # no cache folder, no temporary one
