"""The job spec: everything that determines one run's results, typed, frozen and versioned.

The plan (``uadflows.config``) builds one ``JobSpec`` per run, with the trainer settings
already resolved from the method's recipe; the workflow writes it to
``runs/{dataset}/{category}/{model}/seed{seed}/spec.json`` and every later step (train,
score, evaluate, report, tracking) reads it back with ``JobSpec.load(path)``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError

from uadflows.io import read_json, write_json

SPEC_VERSION = 1
SPEC_FILE = "spec.json"


class SpecError(ValueError):
    """A spec file that cannot be used; the message names the file and the field."""


def run_key(dataset: str, category: str, model: str, seed: int) -> str:
    """The one name of a run: its folder under ``runs/`` and its MLflow run name."""
    return f"{dataset}/{category}/{model}/seed{seed}"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainOptions(_Frozen):
    """Trainer settings, resolved at plan time (config value, else the method's recipe).
    The learning-rate schedule is the method's own (its ``params`` set it)."""

    epochs: PositiveInt
    batch_size: PositiveInt
    lr: PositiveFloat
    checkpoint_every: PositiveInt = 10
    amp: bool = False
    compile: bool = False
    eval_every: PositiveInt | None = None  # the test-set diagnostic (uadflows.diagnostic)


class ThresholdRule(_Frozen):
    """How a threshold is chosen on the normal validation images' scores (docs/statistics.md):
    ``quantile``: their q-quantile (linear interpolation); ``mean_std``: mean + k * std.
    Only the rule's own parameter is used (q for quantile, k for mean_std)."""

    rule: Literal["quantile", "mean_std"]
    q: float = Field(0.99, gt=0, lt=1, description="quantile rule: the quantile of normal scores")
    k: float = Field(3.0, description="mean_std rule: standard deviations above the mean")


class EvaluationOptions(_Frozen):
    resolution: Literal["original", "model"] = "original"
    pro_limit: float = Field(0.3, gt=0, le=1)
    # Defaults (docs/statistics.md): image scores are few and skewed, so a distribution-free
    # quantile; pixels are many, and mean + 3 std is MVTec AD 2's official rule.
    image_threshold: ThresholdRule = Field(
        ThresholdRule(rule="quantile", q=0.99),
        description="threshold of image scores, chosen on the validation images")
    pixel_threshold: ThresholdRule = Field(
        ThresholdRule(rule="mean_std", k=3.0),
        description="threshold of pixel scores, chosen on the validation images' maps")


class ValidationSplit(_Frozen):
    """Normal training images held out from training, on which thresholds are chosen."""

    fraction: float = Field(0.1, ge=0, lt=1, description="share of the training images held out "
                            "(ceil(fraction x n), at least one); 0: none, no thresholded metrics")
    seed: int = Field(0, ge=0, description="seed of the random choice of held-out images")


class StatisticsOptions(_Frozen):
    """Uncertainty of every metric (uadflows.stats, docs/statistics.md)."""

    resamples: int = Field(1000, ge=10, description="bootstrap resamples of the test images")
    seed: int = Field(0, ge=0, description="seed of the resampling")
    level: float = Field(0.95, gt=0, lt=1, description="interval level")
    bins: int = Field(24576, ge=16, description="global bins of the per-image pixel histograms")


class JobSpec(_Frozen):
    version: Literal[1] = SPEC_VERSION
    sweep: str
    dataset: str
    format: str
    category: str
    model: str
    method: str
    backbone: str
    pretrained: bool = True
    weights_file: str | None = None
    image_size: tuple[PositiveInt, PositiveInt]
    extractor: str
    seed: int = Field(ge=0)
    device: str = "auto"
    protocol: Literal["last-epoch", "best-on-test"] = "last-epoch"  # best-on-test: opt-in, needs eval_every
    params: dict[str, Any] = Field(default_factory=dict)
    train: TrainOptions
    evaluation: EvaluationOptions = EvaluationOptions()
    statistics: StatisticsOptions = StatisticsOptions()
    # held-out training images, or "official": the dataset's own validation split (MVTec AD 2)
    validation: ValidationSplit | Literal["official"] = ValidationSplit()

    @property
    def key(self) -> str:
        return run_key(self.dataset, self.category, self.model, self.seed)

    @property
    def weights(self) -> str:
        """The exact weights of the backbone (``backbones.tags.weights_tag``: a timm
        ``arch.tag``, a file's sha256, the packaged lite0 file, or "random")."""
        from uadflows.backbones.tags import weights_tag  # torch-free

        try:
            return weights_tag(self.backbone, self.pretrained, self.weights_file)
        except (OSError, KeyError, ImportError) as e:  # e.g. planned where the file is not
            return f"unresolved ({str(e).strip(chr(34))})"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def digest(self) -> str:
        """Changes whenever anything in the spec changes (a Snakemake param: reruns downstream)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def flat(self) -> dict[str, str]:
        """Every resolved parameter as ``dotted.key -> text`` (MLflow params, tables)."""
        return {"weights": self.weights, **flatten(self.to_dict())}

    @classmethod
    def parse(cls, obj: Any, where: str) -> "JobSpec":
        try:
            return cls.model_validate(obj)
        except ValidationError as e:
            lines = [f"field '{'.'.join(str(p) for p in err['loc']) or '(top level)'}': {err['msg']}"
                     for err in e.errors()[:5]]
            raise SpecError(f"{where}: not a valid job spec (version {SPEC_VERSION}): "
                            + "; ".join(lines) + "; rerun the workflow to rewrite it") from None

    @classmethod
    def load(cls, path: str | Path) -> "JobSpec":
        return cls.parse(read_json(path), str(path))

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 0.001}} -> {"train.lr": "0.001"}``; lists become JSON text."""
    out: dict[str, str] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out
