"""Bad configuration is caught before any job runs, with a message naming the key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from uadflows.config import ConfigError, Run, load_plan, read_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def raw():
    return read_config(ROOT / "configs/test/tiny.yaml")


def test_demo_and_tiny_configs_plan(raw):
    plan = load_plan(raw)
    assert [r.category for r in plan.runs] == ["brick", "gravel"]
    spec = plan.spec(plan.runs[0])
    assert spec["method"] == "fastflow" and spec["seed"] == 0 and spec["image_size"] == [64, 64]
    assert spec["extractor"] == plan.extractor_key("fastflow", "brick")
    assert len(plan.extractors()) == 2
    demo = load_plan(read_config(ROOT / "config.yaml"))
    assert {r.category for r in demo.runs} == {"brick", "grass", "gravel"}


def test_seeds_are_part_of_every_run_key(raw):
    raw["seeds"] = [0, 1]
    plan = load_plan(raw)
    assert len(plan.runs) == 4
    assert len({r.path for r in plan.runs}) == 4
    assert Run("demo", "brick", "fastflow", 1).path == "demo/brick/fastflow/seed1"


def _error(raw) -> str:
    with pytest.raises(ConfigError) as e:
        load_plan(raw)
    return str(e.value)


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["models"]["fastflow"].update(method="fastflaw"), "models.fastflow.method"),
        (lambda c: c["models"]["fastflow"].update(backbone="no_such_net"), "models.fastflow.backbone"),
        (lambda c: c["models"]["fastflow"].update(epochs=-3), "models.fastflow.epochs"),
        (lambda c: c["models"]["fastflow"].update(batch_size=0), "models.fastflow.batch_size"),
        (lambda c: c["models"]["fastflow"].update(learning_rate=1e-3), "models.fastflow"),
        (lambda c: c["datasets"]["demo"].update(categories=["brick", "marble"]), "datasets.demo.categories"),
        (lambda c: c["datasets"]["demo"].update(format="mvtecad"), "datasets.demo.format"),
        (lambda c: c.update(seeds=[]), "seeds"),
        (lambda c: c["evaluation"].update(resolution="256"), "evaluation.resolution"),
        (lambda c: c.pop("models"), "(top level)"),
        (lambda c: c["models"]["fastflow"].update(per_category={"marble": {"epochs": 3}}),
         "models.fastflow.per_category.marble"),
    ],
)
def test_bad_config_names_the_key(raw, mutate, key):
    bad = copy.deepcopy(raw)
    mutate(bad)
    assert key in _error(bad)


def test_missing_dataset_root_names_the_key(raw, tmp_path):
    raw["datasets"]["mvtec"] = {"format": "mvtec", "root": str(tmp_path / "nowhere")}
    msg = _error(raw)
    assert "datasets.mvtec.root" in msg and "nowhere" in msg


def test_unknown_real_category_names_the_key(raw, tmp_path):
    (tmp_path / "bottle").mkdir()
    raw["datasets"]["mvtec"] = {"format": "mvtec", "root": str(tmp_path), "categories": ["bottel"]}
    assert "datasets.mvtec.categories" in _error(raw)


def test_per_category_overrides(raw):
    raw["models"]["fastflow"]["per_category"] = {"gravel": {"image_size": 96, "params": {"clamp": 1.5}}}
    plan = load_plan(raw)
    brick, gravel = plan.spec(plan.runs[0]), plan.spec(plan.runs[1])
    assert brick["image_size"] == [64, 64] and gravel["image_size"] == [96, 96]
    assert gravel["params"]["clamp"] == 1.5 and "clamp" not in brick["params"]
    assert brick["extractor"] != gravel["extractor"]


def test_paper_configs_validate():
    """Every shipped config is valid (dataset roots are the user's: not checked here)."""
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        plan = load_plan(yaml.safe_load(path.read_text()), check_roots=False)
        assert plan.runs, path
