"""Light jobs stay light: planning and the torch-free sub-commands never import torch or
timm (2-4 s of start-up per job otherwise). Each command runs, for real on tiny inputs, in
a fresh interpreter that then reports which heavy modules it holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "FrEIA")
# Slow imports (0.5-3 s each) that only some light jobs' work needs: the others must not
# pay them at start-up (benchmarks/startup.py measures it).
SLOW = ("sklearn", "matplotlib", "scipy.stats")
# Runs a uadflows command (or Python code) in this interpreter, then prints what it imported.
PROBE = """
import json, sys
kind, args = sys.argv[1], sys.argv[2:]
try:
    if kind == "cli":
        from uadflows.cli import main
        rc = main(args)
    else:
        exec(args[0])
        rc = 0
except SystemExit as e:  # --help
    rc = e.code
print("HEAVY=" + json.dumps(sorted(m for m in %r if m in sys.modules)))
sys.exit(rc)
""" % (HEAVY + SLOW,)


def heavy_modules(kind: str, *args: str, cwd: Path | None = None, slow: bool = False) -> list[str]:
    """The HEAVY modules (and with ``slow`` also the SLOW ones) the probe held at the end."""
    p = subprocess.run([sys.executable, "-c", PROBE, kind, *map(str, args)], capture_output=True,
                       text=True, cwd=cwd, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 0, f"{kind} {args}: exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    line = [x for x in p.stdout.splitlines() if x.startswith("HEAVY=")][-1]
    return [m for m in json.loads(line[len("HEAVY="):]) if slow or m in HEAVY]


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """A tiny config, its demo data, one run's spec, a weight-free summary and scores."""
    from uadflows.config import load_plan
    from uadflows.data import index_category
    from uadflows.data.demo import make_demo

    base = tmp_path_factory.mktemp("light")
    raw = yaml.safe_load((ROOT / "configs/test/tiny.yaml").read_text())
    raw["results"] = str(base / "results")
    raw["datasets"]["demo"].update(root=str(base / "demo"), categories=["brick"])
    raw["mlflow"]["tracking_uri"] = f"sqlite:///{base / 'mlflow.db'}"
    (base / "config.yaml").write_text(yaml.safe_dump(raw))
    make_demo(base / "demo", ("brick",), seed=0, image_size=64, n_train=2, n_test_good=2, n_test_defect=2)
    plan = load_plan(raw)
    run = base / "results/runs" / plan.runs[0].path
    run.mkdir(parents=True)
    plan.spec(plan.runs[0]).save(run / "spec.json")
    (run / "summary.json").write_text(json.dumps({"flow_params": 10, "epochs": 2, "train_seconds": 1.0}))
    test = [x for x in index_category("demo", base / "demo", "brick") if x.split == "test"]
    labels = np.array([x.label for x in test], dtype=np.int8)
    rng = np.random.default_rng(0)
    np.savez(run / "scores.npz", status="ok", labels=labels, image_scores=labels + rng.random(len(test)),
             maps=rng.random((len(test), 16, 16)).astype(np.float32), flow_seconds=0.1,
             images=np.array([str(x.image) for x in test]), masks=np.array([str(x.mask or "") for x in test]))
    return {"base": base, "run": run, "plan": plan}


def test_light_commands_never_import_torch_or_timm(tiny_sweep):
    base, run = tiny_sweep["base"], tiny_sweep["run"]
    results = base / "results"
    commands = {
        "check-config": ["check-config", base / "config.yaml"],
        "verify": ["verify", "--dataset", "demo", "--root", base / "demo", "--category", "brick",
                   "--index-dir", base / "index"],
        "evaluate": ["evaluate", "--spec", run / "spec.json", "--summary", run / "summary.json",
                     "--scores", run / "scores.npz", "--out", run / "metrics.json"],
        "aggregate": ["aggregate", "--out", results / "metrics.csv", run / "metrics.json"],
        "report": ["report", "--metrics", results / "metrics.csv", "--out", results / "report"],
        "mlflow": ["mlflow", "--metrics", results / "metrics.csv", "--tracking-uri", f"sqlite:///{base / 'mlflow.db'}",
                   "--experiment", "light", "--sweep", "tiny", "--tables", results / "report/tables"],
    }
    found = {}
    for name, args in commands.items():
        found[name] = heavy_modules("cli", *args, cwd=base, slow=True)
    assert json.loads((run / "metrics.json").read_text())["status"] == "ok"  # really evaluated
    assert (results / "report/tables/summary.md").is_file()
    # only the report draws figures (matplotlib); the tiny sweep needs no scipy.stats test
    assert found == {k: ["matplotlib"] if k == "report" else [] for k in found}


def test_registry_names_recipes_and_labels_without_torch():
    code = ("from uadflows import methods\n"
            "from uadflows.methods.fastflow.config import FastFlowConfig\n"
            "assert methods.available() == ['cflow', 'csflow', 'fastflow', 'knn', 'msflow', 'uflow'], methods.available()\n"
            "assert [methods.label(m) for m in methods.available()] == ['CFlow', 'CS-Flow', 'FastFlow', 'kNN', 'MSFlow', 'U-Flow']\n"
            "assert methods.recipe('fastflow')['lr'] == FastFlowConfig().lr\n")
    assert heavy_modules("py", code) == []
    # the probe sees torch when a model is built: the assertion above can fail
    assert "torch" in heavy_modules("py", "from uadflows import methods; methods.get('fastflow')")


def test_each_method_folder_registers_its_name_with_its_config_recipe_and_label():
    from uadflows import methods

    for name in methods.available():
        cls = methods.get(name)
        assert (cls.name, cls.config_class, cls.label) == (name, methods.recipe_class(name), methods.label(name))
    with pytest.raises(KeyError, match="unknown method 'nope'; available: cflow, csflow, fastflow, knn, msflow, uflow"):
        methods.recipe("nope")


def test_planning_builds_each_extractor_spec_once(monkeypatch):
    """20 seeds x 2 categories x 2 models of one set-up: one extractor_spec call, not 80."""
    from uadflows.backbones import setups
    from uadflows.config import load_plan

    calls = []
    real = setups.extractor_spec
    monkeypatch.setattr(setups, "extractor_spec", lambda *a, **k: calls.append(a) or real(*a, **k))
    monkeypatch.setattr("uadflows.backbones.extractor_spec", setups.extractor_spec)
    raw = yaml.safe_load((ROOT / "configs/test/tiny.yaml").read_text())
    raw["seeds"] = list(range(20))
    raw["models"] = {"fastflow": raw["models"]["fastflow"], "other": {**raw["models"]["fastflow"], "epochs": 3}}
    plan = load_plan(raw, check_roots=False)
    assert len(plan.runs) == 80
    key = plan.spec(plan.runs[0]).extractor
    assert set(plan.extractor_specs) == {key} and plan.extractor_specs[key].key() == key
    assert len(calls) == 1 + len(raw["models"])  # the plan's one, plus load_plan's name check per model
