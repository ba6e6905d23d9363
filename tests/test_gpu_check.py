"""benchmarks/gpu_check.sh without a GPU: its configs, its summary, and its refusal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def test_variant_configs_are_valid_demo_configs_on_cuda():
    from uadflows.config import load_plan

    for variant, (amp, compile_) in gpu_check.VARIANTS.items():
        plan = load_plan(gpu_check.variant_config(variant))
        specs = list(plan.specs.values())
        assert {(s.device, s.train.amp, s.train.compile) for s in specs} == {("cuda", amp, compile_)}
        assert {s.method for s in specs} >= {"fastflow", "msflow", "uflow"}
    with pytest.raises(ValueError, match="variant 'fp16'"):
        gpu_check.variant_config("fp16")


def _row(model, category, auroc, gpu=100.0):
    return {"model": model, "category": category, "train_images_per_s": 10.0, "score_images_per_s": 20.0,
            "peak_gpu_mb": gpu, "metrics": {"image_auroc": auroc, "pixel_auroc": 0.9}}


def test_summary_flags_a_metric_change_above_half_a_point():
    base = [_row("ff", "brick", 0.900), _row("ff", "grass", 0.800)]
    rows = gpu_check.summarize({"base": base, "amp": [_row("ff", "brick", 0.904), _row("ff", "grass", 0.800, 50.0)],
                                "amp+compile": [_row("ff", "brick", 0.900), _row("ff", "grass", 0.790)]})
    by = {r["variant"]: r for r in rows}
    assert by["amp"]["max_metric_change_points"] == pytest.approx(0.4)
    assert by["amp"]["changes_metrics"] is False and by["amp+compile"]["changes_metrics"] is True
    assert by["amp+compile"]["max_metric_change_points"] == pytest.approx(1.0)
    assert by["base"]["changes_metrics"] is None and by["amp"]["peak_gpu_mb"] == 100.0


def test_script_refuses_clearly_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine: the script would run the check (minutes)")
    p = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), "unused"], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=120)
    assert p.returncode == 2
    assert "no CUDA device visible to torch" in p.stderr
    assert not (ROOT / "unused").exists()
