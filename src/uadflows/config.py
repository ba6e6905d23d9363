"""The workflow configuration, typed and validated before any job runs.

``Config`` (pydantic) is the one source of the config's types, defaults and messages; the
JSON schema Snakemake's ``validate`` uses is generated from it (``uadflows schema``; a test
checks the committed workflow/schemas/config.schema.yaml is current). ``load_plan(raw)``
validates a config dict, then what a schema cannot know (method and backbone names,
categories), raising ``ConfigError`` with the dotted key at fault. The ``Plan`` lists every
run (dataset x category x model x seed) and builds each run's ``JobSpec`` once, trainer
settings resolved from the method's recipe.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, field_validator

from uadflows.data.index import FORMATS
from uadflows.spec import EvaluationOptions, JobSpec, StatisticsOptions, TrainOptions, ValidationSplit, run_key

SCHEMA_FILE = "workflow/schemas/config.schema.yaml"
# Trainer settings: top-level keys of a model, resolved into JobSpec.train (never params).
TRAINER_KEYS = ("epochs", "batch_size", "lr")

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")]
DottedName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]


class ConfigError(ValueError):
    """A bad configuration; the message starts with the key at fault."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique(values: list) -> list:
    if len(set(values)) != len(values):
        raise ValueError("items must be unique")
    return values


class DemoOptions(_Section):
    """Options of the generated demo data (format demo only)."""

    seed: int | None = Field(None, ge=0)
    image_size: int | None = Field(None, ge=32)
    n_train: PositiveInt | None = None
    n_test_good: PositiveInt | None = None
    n_test_defect: PositiveInt | None = None


class DatasetSection(_Section):
    format: Literal[FORMATS]
    root: str = Field(min_length=1)
    categories: Literal["all"] | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] = "all"
    demo: DemoOptions = DemoOptions()
    validation: ValidationSplit = Field(
        ValidationSplit(), description="normal training images held out for thresholds "
        "(docs/statistics.md); mvtec_ad2 uses its official validation split instead")

    @field_validator("categories")
    @classmethod
    def _unique_categories(cls, v):
        return v if v == "all" else _unique(v)


class Overrides(_Section):
    """Per-category overrides of a model, e.g. ``{transistor: {image_size: 256}}``."""

    image_size: int | None = Field(None, ge=16)
    epochs: PositiveInt | None = None
    batch_size: PositiveInt | None = None
    lr: PositiveFloat | None = None
    params: dict[str, Any] = {}


class ModelSection(_Section):
    method: str = Field(description="a name of uadflows.methods.available()")
    backbone: str
    image_size: int = Field(ge=16)
    pretrained: bool = True
    weights_file: str | None = None
    epochs: PositiveInt | None = Field(None, description="default: the method's recipe")
    batch_size: PositiveInt | None = Field(None, description="default: the method's recipe")
    lr: PositiveFloat | None = Field(None, description="default: the method's recipe")
    checkpoint_every: PositiveInt = 10
    amp: bool = Field(False, description="bfloat16 autocast in training (CUDA only)")
    compile: bool = Field(False, description="torch.compile the flow (CUDA only)")
    eval_every: PositiveInt | None = Field(
        None, description="diagnostic: test metrics every K epochs (diagnostic_on_test.csv); "
        "evaluated on the test set, not a protocol")
    protocol: Literal["last-epoch", "best-on-test"] = Field(
        "last-epoch", description="last-epoch (default) or best-on-test: the best eval_every "
        "checkpoint on the test set, as the original codes report; labelled wherever it appears")
    params: dict[str, Any] = Field({}, description="the method's own parameters (its config.py)")
    datasets: list[str] | None = Field(None, description="restrict this model to these datasets (default all)")
    per_category: dict[str, Overrides] = {}


class MlflowSection(_Section):
    tracking_uri: str = "sqlite:///mlflow.db"


class ReportSection(_Section):
    figures: bool = True
    spread: Literal["std", "interval"] = Field(
        "std", description="what follows ± in a table cell: std over seeds, or the half-width of the bootstrap interval")


class Config(_Section):
    """uadflows workflow configuration (config.yaml and configs/**.yaml)."""

    sweep: DottedName = Field(description="name of this sweep (MLflow parent run, table captions)")
    experiment: str | None = Field(None, description="MLflow experiment name (default uadflows-<sweep>)")
    results: str = Field("results", description="folder every output is written to")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seeds: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
    weights_cache: str | None = Field(
        None, description="folder of pretrained weights fetched once on the submit host (default <results>/weights)")
    mlflow: MlflowSection = MlflowSection()
    evaluation: EvaluationOptions = EvaluationOptions()
    statistics: StatisticsOptions = StatisticsOptions()
    report: ReportSection = ReportSection()
    datasets: Annotated[dict[Name, DatasetSection], Field(min_length=1)]
    models: Annotated[dict[DottedName, ModelSection], Field(min_length=1)]

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v):
        return _unique(v)


def json_schema() -> dict[str, Any]:
    """The JSON schema of ``Config`` (what Snakemake's ``validate`` checks)."""
    schema = Config.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_yaml() -> str:
    return ("# GENERATED by `uadflows schema` from uadflows.config.Config: do not edit.\n"
            + yaml.safe_dump(json_schema(), sort_keys=True))


@dataclass(frozen=True)
class Run:
    dataset: str
    category: str
    model: str
    seed: int

    @property
    def path(self) -> str:
        return run_key(self.dataset, self.category, self.model, self.seed)


@dataclass(frozen=True)
class Dataset:
    name: str
    format: str
    root: Path
    categories: tuple[str, ...]
    demo: DemoOptions
    validation: ValidationSplit | str  # "official": the dataset's own split (MVTec AD 2)


@dataclass
class Plan:
    config: Config
    datasets: dict[str, Dataset]
    recipes: dict[str, dict[str, Any]]  # method -> its trainer defaults
    # (backbone, size, pretrained, weights_file) -> (extractor key, ExtractorSpec)
    _extractor_memo: dict[tuple, tuple[str, Any]] = field(default_factory=dict, init=False, repr=False)

    @property
    def sweep(self) -> str:
        return self.config.sweep

    @property
    def experiment(self) -> str:
        return self.config.experiment or f"uadflows-{self.config.sweep}"

    @property
    def results(self) -> Path:
        return Path(self.config.results)

    @property
    def device(self) -> str:
        return self.config.device

    @property
    def tracking_uri(self) -> str:
        return self.config.mlflow.tracking_uri

    @property
    def figures(self) -> bool:
        return self.config.report.figures

    @property
    def spread(self) -> str:
        return self.config.report.spread

    @property
    def statistics(self) -> dict[str, Any]:
        return self.config.statistics.model_dump()

    @property
    def weights_cache(self) -> Path:
        return Path(self.config.weights_cache or self.results / "weights").expanduser()

    @cached_property
    def runs(self) -> list[Run]:
        out = []
        for d in self.datasets.values():
            for c in d.categories:
                for name, m in self.config.models.items():
                    if m.datasets is None or d.name in m.datasets:
                        out.extend(Run(d.name, c, name, s) for s in self.config.seeds)
        return out

    @cached_property
    def specs(self) -> dict[Run, JobSpec]:
        """Every run's job spec, built once."""
        return {r: self._build_spec(r) for r in self.runs}

    @cached_property
    def extractor_specs(self) -> dict[str, Any]:
        """Every extractor key's ``ExtractorSpec`` (resources read shapes from it), built once."""
        return {key: spec for key, spec in self._extractor_memo.values()}

    def _extractor(self, backbone: str, size: int, pretrained: bool, weights_file: str | None) -> str:
        """The extractor key of a set-up, computed once per distinct set-up (not per run)."""
        memo_key = (backbone, size, pretrained, weights_file)
        if memo_key not in self._extractor_memo:
            from uadflows.backbones import extractor_spec

            spec = extractor_spec(backbone, image_size=size, pretrained=pretrained, weights_file=weights_file)
            self._extractor_memo[memo_key] = (spec.key(), spec)
        return self._extractor_memo[memo_key][0]

    @cached_property
    def extractors(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """``create_extractor`` arguments of every distinct (dataset, category, extractor key)."""
        out = {}
        for r, s in self.specs.items():
            out[(r.dataset, r.category, s.extractor)] = {
                "name": s.backbone, "image_size": s.image_size[0], "pretrained": s.pretrained,
                "weights_file": s.weights_file, "cache_dir": str(self.weights_cache),
            }
        return out

    def spec(self, run: Run) -> JobSpec:
        return self.specs[run]

    def validation_args(self, dataset: str) -> str:
        """``uadflows verify`` options that hold out a dataset's validation split ("" when
        none is held out: fraction 0, or the dataset's official split)."""
        v = self.datasets[dataset].validation
        if v == "official" or v.fraction == 0:
            return ""
        return (f"--validation-fraction {v.fraction} --validation-seed {v.seed} "
                f"--validation-key datasets.{dataset}.validation.fraction")

    def _build_spec(self, run: Run) -> JobSpec:
        m = self.config.models[run.model]
        over = m.per_category.get(run.category, Overrides())
        where = f"models.{run.model}"
        params = {**m.params, **over.params}
        top = {k: getattr(over, k) if getattr(over, k) is not None else getattr(m, k) for k in TRAINER_KEYS}
        for k in TRAINER_KEYS:
            if k in params:
                if top[k] is not None:
                    raise ConfigError(f"config key '{where}.params.{k}': also given as '{where}.{k}'; "
                                      "set it once (at the top level of the model)")
                top[k] = params.pop(k)
        train = {k: top[k] if top[k] is not None else self.recipes[m.method][k] for k in TRAINER_KEYS}
        if train["epochs"] != 1 and _one_pass(m.method):
            raise ConfigError(f"config key '{where}.epochs': {m.method} is fitted in one pass over the "
                              f"training features (no optimiser); epochs must be 1, got {train['epochs']}")
        size = over.image_size or m.image_size
        d = self.datasets[run.dataset]
        key = self._extractor(m.backbone, size, m.pretrained, m.weights_file)
        try:
            return JobSpec(
                sweep=self.sweep, dataset=d.name, format=d.format, category=run.category,
                model=run.model, method=m.method, backbone=m.backbone, pretrained=m.pretrained,
                weights_file=m.weights_file, image_size=(size, size), extractor=key, seed=run.seed,
                device=self.device, params=params, evaluation=self.config.evaluation,
                statistics=self.config.statistics, validation=d.validation,
                train=TrainOptions(**train, checkpoint_every=m.checkpoint_every, amp=m.amp,
                                   compile=m.compile, eval_every=m.eval_every),
                protocol=m.protocol,
            )
        except ValidationError as e:
            err = e.errors()[0]
            raise ConfigError(f"config key '{where}.{'.'.join(map(str, err['loc']))}': {err['msg']}") from None


def _one_pass(method: str) -> bool:
    """The recipe says so (torch-free: planning never imports a model)."""
    from uadflows import methods

    return bool(getattr(methods.recipe_class(method), "fits_from_data", False))


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping")
    return raw


def parse_config(raw: dict[str, Any]) -> Config:
    """Types and defaults; every error names its dotted key."""
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_message(err) for err in e.errors()[:10])) from None


# pydantic adds a union member's type to the location (e.g. 'list[str]', "literal['all']"):
# not a key. A user's key may hold '[' too (tests/test_fuzz_config.py found one): match the tag.
_UNION_TAG = re.compile(r"^[a-z][a-z0-9_-]*\[.*\]$|^literal")


def _message(err: dict[str, Any]) -> str:
    keys = lambda loc: [str(p) for p in loc if not (isinstance(p, str) and _UNION_TAG.match(p))]  # noqa: E731
    loc = keys(err["loc"])
    if err["type"] in ("missing", "extra_forbidden"):
        # the last element is the missing or unknown key itself, whatever it looks like
        parent, key = ".".join(keys(err["loc"][:-1])) or "(top level)", str(err["loc"][-1])
        what = "missing required key" if err["type"] == "missing" else "unknown key"
        return f"config key '{parent}': {what} {key!r}"
    return f"config key '{'.'.join(loc) or '(top level)'}': {err['msg']}"


def load_plan(raw: dict[str, Any], *, check_roots: bool = True) -> Plan:
    """Validate ``raw`` (types, then names and categories) and build the Plan.

    ``check_roots=False`` (the workflow) plans a config whose dataset roots are elsewhere
    (e.g. the cluster's): the official category lists stand in, and the verify rule
    reports a missing root; ``uadflows check-config`` checks them."""
    from uadflows import methods

    config = parse_config(copy.deepcopy(raw))
    datasets = {name: _dataset(name, d, check_roots) for name, d in config.datasets.items()}
    known_cats = {c for d in datasets.values() for c in d.categories}
    recipes = {}
    for name, m in config.models.items():
        if m.method not in methods.available():
            raise ConfigError(f"config key 'models.{name}.method': unknown method {m.method!r};"
                              f" available: {', '.join(methods.available())}")
        recipes[m.method] = methods.recipe(m.method)
        _check_backbone(f"models.{name}.backbone", m.backbone)
        for ds in m.datasets or []:
            if ds not in datasets:
                raise ConfigError(f"config key 'models.{name}.datasets': no dataset named {ds!r}")
        for cat in m.per_category:
            if cat not in known_cats:
                raise ConfigError(f"config key 'models.{name}.per_category.{cat}': not a category of any dataset")
        if m.weights_file and check_roots and not Path(m.weights_file).expanduser().is_file():
            raise ConfigError(f"config key 'models.{name}.weights_file': file {m.weights_file} does not exist")
        if m.protocol == "best-on-test" and not m.eval_every:
            raise ConfigError(f"config key 'models.{name}.protocol': best-on-test needs "
                              "'eval_every' (the checkpoints it picks the best of)")
    plan = Plan(config=config, datasets=datasets, recipes=recipes)
    if not plan.runs:
        raise ConfigError("config key 'models': no (dataset, model) pair selects any run")
    plan.specs  # noqa: B018 - every spec built (and checked) now, before any job runs
    return plan


def _dataset(name: str, d: DatasetSection, check_roots: bool) -> Dataset:
    from uadflows.data import OFFICIAL_CATEGORIES, DatasetError, resolve_categories

    root = Path(d.root).expanduser()
    sel = d.categories
    key = f"datasets.{name}.categories"
    if d.format == "demo":
        cats = list(OFFICIAL_CATEGORIES["demo"]) if sel == "all" else list(sel)
        bad = [c for c in cats if c not in OFFICIAL_CATEGORIES["demo"]]
        if bad:
            raise ConfigError(f"config key '{key}': unknown demo category {bad[0]!r};"
                              f" known: {', '.join(OFFICIAL_CATEGORIES['demo'])}")
    elif root.is_dir() or check_roots:
        if not root.is_dir():
            raise ConfigError(f"config key 'datasets.{name}.root': folder {root} does not exist")
        try:
            cats = resolve_categories(d.format, root, sel)
        except DatasetError as e:
            raise ConfigError(f"config key '{key}': {e}") from None
    else:  # planning a config for another machine: the official lists stand in
        official = OFFICIAL_CATEGORIES.get(d.format, ())
        cats = list(official) if sel == "all" else list(sel)
        bad = [c for c in cats if official and c not in official]
        if bad or not cats:
            raise ConfigError(f"config key '{key}': unknown category {(bad or ['all'])[0]!r} for format {d.format}")
    return Dataset(name, d.format, root, tuple(cats), d.demo, _validation(name, d))


def _validation(name: str, d: DatasetSection) -> ValidationSplit | str:
    """The dataset's validation split: MVTec AD 2's official one, else the held-out share
    (checked now where the training set's size is known: the demo data)."""
    from uadflows.data import DatasetError
    from uadflows.data.holdout import validation_count

    key = f"datasets.{name}.validation"
    if d.format == "mvtec_ad2":  # (compared, not "was it set": Snakemake fills in defaults)
        if d.validation != ValidationSplit():
            raise ConfigError(f"config key '{key}': mvtec_ad2 has an official validation split "
                              "(validation/good), used as it is; remove this key")
        return "official"
    if d.format == "demo":
        from uadflows.data.base import DEMO_N_TRAIN

        try:
            validation_count(d.demo.n_train or DEMO_N_TRAIN, d.validation.fraction, f"{key}.fraction")
        except DatasetError as e:
            raise ConfigError(str(e)) from None
    return d.validation


def _check_backbone(key: str, name: str) -> None:
    from uadflows.backbones import extractor_spec

    try:
        extractor_spec(name, pretrained=False)
    except (KeyError, ValueError, RuntimeError) as e:
        raise ConfigError(f"config key '{key}': unknown backbone {name!r} ({e})") from None
