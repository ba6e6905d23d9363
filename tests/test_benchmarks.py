"""The benchmarks are run by hand, not timed here; these tests keep them runnable (their
--quick modes end to end) and check that the flow variants they compare are what they say."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import FrEIA.modules as Fm
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def _benchmark_module(name: str):
    """A script of benchmarks/ imported as a module (they import each other by bare name)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def speed_common():
    yield from _benchmark_module("speed_common")


def test_flow_variants_hold_the_same_weights_and_agree(speed_common):
    from uadflows.methods.fastflow import LeanAllInOneBlock

    models = speed_common.fastflow_models("resnet18", 64)
    assert list(models) == list(speed_common.VARIANTS) == ["freia", "index-perm", "lean"]
    blocks = {v: m.flows[0].module_list[0] for v, m in models.items()}
    assert not isinstance(blocks["freia"], LeanAllInOneBlock)
    assert isinstance(blocks["index-perm"], LeanAllInOneBlock)
    assert type(blocks["index-perm"]).forward is Fm.AllInOneBlock.forward  # only the permutation is ours
    assert type(blocks["lean"]) is LeanAllInOneBlock
    torch.manual_seed(0)
    features = [torch.randn(2, *chw) for chw in models["freia"].chw]
    with torch.no_grad():
        outs = {v: m(features) for v, m in models.items()}
    for v in ("index-perm", "lean"):
        for z, z_ref, j, j_ref in zip(outs[v].z, outs["freia"].z, outs[v].log_jac, outs["freia"].log_jac):
            torch.testing.assert_close(z, z_ref, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(j, j_ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown flow variant 'candidate'"):
        speed_common.fastflow_models("resnet18", 64, ("candidate",))


@pytest.mark.parametrize("script, args, expected", [
    ("speed_epoch.py", [], "FrEIA in loop / lean cached"),
    ("speed_inference.py", ["--only", "methods"], "lean flow+maps s"),
    ("memory.py", [], "train RSS MB"),
])
def test_quick_run_prints_its_tables(script, args, expected, tmp_path):
    json_out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick", *args, "--json", str(json_out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert expected in proc.stdout and "\nmachine: {" in proc.stdout, proc.stdout
    assert json_out.stat().st_size > 0



@pytest.fixture()
def collapse():
    yield from _benchmark_module("collapse")


def test_collapse_quick_trains_every_norm_and_merges_only_like_with_like(collapse, tmp_path, capsys):
    """benchmarks/collapse.py --quick (in this process: the real runs' trainer call without a
    subprocess per variant): the three LayerNorm modes, the table, the figure; --merge keeps
    the runs of the file and refuses one measured with other settings."""
    out, json_out = tmp_path / "runs", tmp_path / "collapse.json"
    collapse.main(["--quick", "--out", str(out), "--json", str(json_out)])
    printed = capsys.readouterr().out
    result = json.loads(json_out.read_text())
    assert list(result["runs"]) == ["faithful", "bounded", "no-affine"] and result["method"] == "fastflow"
    for norm, run in result["runs"].items():
        assert run["status"] == "ok" and len(run["history"]) == 2, norm
        assert [row["epoch"] for row in run["diagnostic_on_test"]] == [1.0, 2.0]
        assert ("ln_scale0" in run["history"][-1]) == (norm != "no-affine")
        assert f"\n| {norm} | 2 of 2 |" in printed
    assert json_out.with_suffix(".png").stat().st_size > 0
    # no-affine read back from its run folder and merged: the other runs stay, in NORMS order
    json_out.write_text(json.dumps({**result, "runs": {n: result["runs"][n] for n in ("faithful", "bounded")}}))
    again = ["--quick", "--out", str(out), "--collect", "--norms", "no-affine", "--merge", "--json", str(json_out)]
    collapse.main(again)
    merged = json.loads(json_out.read_text())
    assert list(merged["runs"]) == list(merged["machines"]) == ["faithful", "bounded", "no-affine"]
    assert merged["runs"]["no-affine"]["history"] == result["runs"]["no-affine"]["history"]
    json_out.write_text(json.dumps({**merged, "epochs": 3}))
    with pytest.raises(SystemExit, match=f"{json_out}: epochs is 3, these runs' is 2; not merged"):
        collapse.main(again)
