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
    assert [(r.category, r.model) for r in plan.runs] == [
        (c, m) for c in ("brick", "gravel") for m in ("fastflow", "msflow", "uflow")]
    spec = plan.spec(plan.runs[0])
    assert spec.method == "fastflow" and spec.seed == 0 and spec.image_size == (64, 64)
    assert spec.key == "demo/brick/fastflow/seed0"
    # FastFlow and U-Flow share the 64 px cache; MSFlow reads the images at 128 px
    specs = [plan.spec(r) for r in plan.runs]
    assert {s.extractor for s in specs if s.method != "msflow"} == {spec.extractor}
    assert {k[2] for k in plan.extractors} == {s.extractor for s in specs}
    assert len(plan.extractors) == 4
    demo = load_plan(read_config(ROOT / "config.yaml"))
    assert {r.category for r in demo.runs} == {"brick", "grass", "gravel"}


def test_seeds_are_part_of_every_run_key(raw):
    raw["seeds"] = [0, 1]
    plan = load_plan(raw)
    assert len(plan.runs) == 12  # 2 seeds x 2 categories x 3 models
    assert len({r.path for r in plan.runs}) == 12
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
    brick, gravel = (plan.spec(Run("demo", c, "fastflow", 0)) for c in ("brick", "gravel"))
    assert brick.image_size == (64, 64) and gravel.image_size == (96, 96)
    assert gravel.params["clamp"] == 1.5 and "clamp" not in brick.params
    assert brick.extractor != gravel.extractor


def test_paper_configs_validate():
    """Every shipped config is valid (dataset roots are the user's: not checked here)."""
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        plan = load_plan(yaml.safe_load(path.read_text()), check_roots=False)
        assert plan.runs, path


def test_trainer_settings_resolve_from_the_config_else_the_recipe(raw):
    from uadflows.methods import recipe

    raw["models"]["fastflow"].pop("batch_size")
    raw["models"]["fastflow"]["per_category"] = {"gravel": {"epochs": 5}}
    plan = load_plan(raw)
    brick, gravel = (plan.spec(Run("demo", c, "fastflow", 0)).train for c in ("brick", "gravel"))
    assert (brick.epochs, gravel.epochs) == (2, 5)
    assert brick.batch_size == recipe("fastflow")["batch_size"] == 32
    assert brick.lr == recipe("fastflow")["lr"]


def test_a_key_at_the_top_and_under_params_is_an_error_naming_both(raw):
    raw["models"]["fastflow"]["params"] = {"epochs": 7}
    msg = _error(raw)
    assert "models.fastflow.params.epochs" in msg and "'models.fastflow.epochs'" in msg
    raw["models"]["fastflow"].pop("epochs")  # under params alone: it is the trainer's
    assert load_plan(raw).spec(Run("demo", "brick", "fastflow", 0)).train.epochs == 7


def test_committed_schema_is_the_generated_one():
    """Snakemake validates against workflow/schemas/config.schema.yaml: regenerate it
    with `uadflows schema --out workflow/schemas/config.schema.yaml`."""
    from uadflows.config import SCHEMA_FILE, schema_yaml

    assert (ROOT / SCHEMA_FILE).read_text() == schema_yaml()


def test_schema_rejects_what_the_models_reject(raw):
    import jsonschema

    from uadflows.config import json_schema

    jsonschema.validate(raw, json_schema())
    raw["models"]["fastflow"]["learning_rate"] = 1e-3
    with pytest.raises(jsonschema.ValidationError, match="learning_rate"):
        jsonschema.validate(raw, json_schema())


def test_spec_round_trips_and_load_errors_name_file_and_field(raw, tmp_path):
    from uadflows.spec import JobSpec, SpecError

    spec = load_plan(raw).spec(Run("demo", "brick", "fastflow", 0))
    spec.save(tmp_path / "spec.json")
    assert JobSpec.load(tmp_path / "spec.json") == spec
    bad = spec.to_dict()
    bad["train"]["epochs"] = 0
    (tmp_path / "bad.json").write_text(__import__("json").dumps(bad))
    with pytest.raises(SpecError, match=r"bad\.json.*field 'train\.epochs'"):
        JobSpec.load(tmp_path / "bad.json")
    with pytest.raises(Exception, match="frozen"):
        spec.seed = 3
