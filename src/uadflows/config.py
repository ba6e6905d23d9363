"""The workflow configuration, typed and validated before any job runs.

``load_plan(raw)`` checks a config dict against ``config.schema.yaml`` and then against
what the schema cannot know (method and backbone names, category names, dataset roots),
raising ``ConfigError`` with the offending key. The resulting ``Plan`` lists every run
(dataset x category x model x seed) and the job spec each rule hands to the CLI.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


class ConfigError(ValueError):
    """A bad configuration; the message starts with the key at fault."""


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    format: str
    root: Path
    categories: tuple[str, ...]
    demo: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    method: str
    backbone: str
    image_size: int
    pretrained: bool = True
    weights_file: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    checkpoint_every: int = 10
    amp: bool = False
    compile: bool = False
    eval_every: int | None = None  # diagnostic test metrics every K epochs (diagnostic.py)
    protocol: str = "last-epoch"
    params: dict[str, Any] = field(default_factory=dict)
    datasets: tuple[str, ...] | None = None
    per_category: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_category(self, category: str) -> "ModelConfig":
        """This model with the category's overrides applied (params merged)."""
        over = self.per_category.get(category)
        if not over:
            return self
        fields = {k: v for k, v in over.items() if k != "params"}
        params = {**self.params, **over.get("params", {})}
        return _replace(self, params=params, per_category={}, **fields)


def _replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


@dataclass(frozen=True)
class Run:
    dataset: str
    category: str
    model: str
    seed: int

    @property
    def path(self) -> str:
        return f"{self.dataset}/{self.category}/{self.model}/seed{self.seed}"


@dataclass
class Plan:
    raw: dict[str, Any]
    sweep: str
    experiment: str
    results: Path
    device: str
    seeds: tuple[int, ...]
    tracking_uri: str
    weights_cache: Path
    evaluation: dict[str, Any]
    figures: bool
    datasets: dict[str, DatasetConfig]
    models: dict[str, ModelConfig]

    @cached_property
    def runs(self) -> list[Run]:
        out = []
        for d in self.datasets.values():
            for c in d.categories:
                for m in self.models.values():
                    if m.datasets is not None and d.name not in m.datasets:
                        continue
                    out.extend(Run(d.name, c, m.name, s) for s in self.seeds)
        return out

    def model(self, name: str, category: str) -> ModelConfig:
        return self.models[name].for_category(category)

    def extractor(self, model: str, category: str) -> dict[str, Any]:
        """Arguments of ``create_extractor`` for this model on this category."""
        m = self.model(model, category)
        return {
            "name": m.backbone,
            "image_size": m.image_size,
            "pretrained": m.pretrained,
            "weights_file": m.weights_file,
            "cache_dir": str(self.weights_cache),
        }

    def extractor_key(self, model: str, category: str) -> str:
        from uadflows.backbones import extractor_spec

        e = self.extractor(model, category)
        return extractor_spec(
            e["name"], image_size=e["image_size"], pretrained=e["pretrained"],
            weights_file=e["weights_file"],
        ).key()

    def extractors(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """Every distinct (dataset, category, extractor key) the runs need."""
        out = {}
        for r in self.runs:
            out[(r.dataset, r.category, self.extractor_key(r.model, r.category))] = self.extractor(
                r.model, r.category
            )
        return out

    def spec(self, run: Run) -> dict[str, Any]:
        """The resolved job config: everything that determines a run's results."""
        m = self.model(run.model, run.category)
        d = self.datasets[run.dataset]
        return {
            "sweep": self.sweep,
            "dataset": d.name,
            "format": d.format,
            "category": run.category,
            "model": m.name,
            "method": m.method,
            "backbone": m.backbone,
            "seed": run.seed,
            "image_size": [m.image_size, m.image_size],
            "pretrained": m.pretrained,
            "weights_file": m.weights_file,
            "extractor": self.extractor_key(run.model, run.category),
            "params": dict(m.params),
            "train": {
                "epochs": m.epochs,
                "batch_size": m.batch_size,
                "lr": m.lr,
                "checkpoint_every": m.checkpoint_every,
                "amp": m.amp,
                "compile": m.compile,
                "eval_every": m.eval_every,
            },
            "evaluation": dict(self.evaluation),
            "device": self.device,
            "protocol": m.protocol,
        }


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


def validate_schema(raw: dict[str, Any]) -> dict[str, Any]:
    """JSON-schema validation, defaults filled in; errors name the key path."""
    import jsonschema

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors[:10]:
            key = ".".join(str(p) for p in e.absolute_path) or "(top level)"
            lines.append(f"config key '{key}': {e.message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    return raw


def load_plan(raw: dict[str, Any], *, check_roots: bool = True) -> Plan:
    """Validate ``raw`` (schema, then names and paths) and build the Plan."""
    from uadflows import methods
    from uadflows.data import OFFICIAL_CATEGORIES, DatasetError, resolve_categories

    raw = copy.deepcopy(raw)
    validate_schema(raw)

    datasets: dict[str, DatasetConfig] = {}
    for name, d in raw["datasets"].items():
        root = Path(d["root"]).expanduser()
        sel = d.get("categories", "all")
        if d["format"] == "demo":
            cats = OFFICIAL_CATEGORIES["demo"] if sel == "all" else list(sel)
            bad = [c for c in cats if c not in OFFICIAL_CATEGORIES["demo"]]
            if bad:
                raise ConfigError(
                    f"config key 'datasets.{name}.categories': unknown demo category {bad[0]!r};"
                    f" known: {', '.join(OFFICIAL_CATEGORIES['demo'])}"
                )
        elif root.is_dir() or check_roots:
            if not root.is_dir():
                raise ConfigError(f"config key 'datasets.{name}.root': folder {root} does not exist")
            try:
                cats = resolve_categories(d["format"], root, sel)
            except DatasetError as e:
                raise ConfigError(f"config key 'datasets.{name}.categories': {e}") from None
        else:  # planning a config for another machine: the official lists stand in
            official = OFFICIAL_CATEGORIES.get(d["format"], ())
            cats = list(official) if sel == "all" else list(sel)
            bad = [c for c in cats if official and c not in official]
            if bad or not cats:
                raise ConfigError(f"config key 'datasets.{name}.categories': unknown category "
                                  f"{(bad or ['all'])[0]!r} for format {d['format']}")
        datasets[name] = DatasetConfig(name, d["format"], root, tuple(cats), d.get("demo", {}))

    models: dict[str, ModelConfig] = {}
    for name, m in raw["models"].items():
        if m["method"] not in methods.available():
            raise ConfigError(
                f"config key 'models.{name}.method': unknown method {m['method']!r};"
                f" available: {', '.join(methods.available())}"
            )
        _check_backbone(f"models.{name}.backbone", m["backbone"])
        for ds in m.get("datasets") or []:
            if ds not in datasets:
                raise ConfigError(f"config key 'models.{name}.datasets': no dataset named {ds!r}")
        known_cats = {c for d in datasets.values() for c in d.categories}
        for cat in m.get("per_category", {}):
            if cat not in known_cats:
                raise ConfigError(
                    f"config key 'models.{name}.per_category.{cat}': not a category of any dataset"
                )
        wf = m.get("weights_file")
        if wf and check_roots and not Path(wf).expanduser().is_file():
            raise ConfigError(f"config key 'models.{name}.weights_file': file {wf} does not exist")
        if m.get("protocol") == "best-on-test" and not m.get("eval_every"):
            raise ConfigError(f"config key 'models.{name}.protocol': best-on-test needs "
                              "'eval_every' (the checkpoints it picks the best of)")
        models[name] = ModelConfig(
            name=name,
            method=m["method"],
            backbone=m["backbone"],
            image_size=m["image_size"],
            pretrained=m.get("pretrained", True),
            weights_file=wf,
            epochs=m.get("epochs"),
            batch_size=m.get("batch_size"),
            lr=m.get("lr"),
            checkpoint_every=m.get("checkpoint_every", 10),
            amp=m.get("amp", False),
            compile=m.get("compile", False),
            eval_every=m.get("eval_every"),
            protocol=m.get("protocol", "last-epoch"),
            params=m.get("params", {}),
            datasets=tuple(m["datasets"]) if m.get("datasets") else None,
            per_category=m.get("per_category", {}),
        )

    sweep = raw["sweep"]
    results = Path(raw.get("results", "results"))
    plan = Plan(
        raw=raw,
        sweep=sweep,
        experiment=raw.get("experiment", f"uadflows-{sweep}"),
        results=results,
        device=raw.get("device", "auto"),
        seeds=tuple(raw["seeds"]),
        tracking_uri=raw.get("mlflow", {}).get("tracking_uri", "sqlite:///mlflow.db"),
        weights_cache=Path(raw.get("weights_cache", results / "weights")).expanduser(),
        evaluation={
            "resolution": raw.get("evaluation", {}).get("resolution", "original"),
            "pro_limit": raw.get("evaluation", {}).get("pro_limit", 0.3),
        },
        figures=raw.get("report", {}).get("figures", True),
        datasets=datasets,
        models=models,
    )
    if not plan.runs:
        raise ConfigError("config key 'models': no (dataset, model) pair selects any run")
    return plan


def _check_backbone(key: str, name: str) -> None:
    from uadflows.backbones import extractor_spec

    try:
        extractor_spec(name, pretrained=False)
    except (KeyError, ValueError, RuntimeError) as e:
        raise ConfigError(f"config key '{key}': unknown backbone {name!r} ({e})") from None
