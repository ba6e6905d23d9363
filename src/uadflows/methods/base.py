"""The contract every method in the registry follows.

A method is a frozen feature extractor (``self.backbone``) followed by trainable parts
(normalisation, flows). Training and scoring run from the feature cache, so the
pipeline calls ``forward`` on cached features and never touches the backbone there;
``extract`` (and therefore ``__call__`` on images via ``predict``) exists for users and
tests that start from pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import nn

from uadflows.backbones.base import Extractor


@dataclass
class FlowOutput:
    """What a flow returns for a batch of features.

    z: latents, one tensor per output scale, each (B, C_s, H_s, W_s).
    log_jac: log-determinant of the Jacobian per sample and scale, each (B,).
        ``None`` when the caller asked for latents only (scoring needs no log-det).
    extras: method-specific tensors (e.g. U-Flow's NFA inputs).
    """

    z: list[torch.Tensor]
    log_jac: list[torch.Tensor] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainSetup:
    """Optimiser and schedule a method's recipe prescribes.

    scheduler_interval: "step" (call ``scheduler.step()`` after every batch) or "epoch".
    grad_clip: max gradient norm, or None.
    """

    optimizer: torch.optim.Optimizer
    scheduler: Any | None = None
    scheduler_interval: str = "epoch"
    grad_clip: float | None = None


class FlowMethod(nn.Module):
    """Base class. ``@methods.register("name")`` sets ``name``; subclasses set the class
    attributes below and implement the abstract methods."""

    name: str = ""
    label: str = ""  # how tables and figures name the method
    config_class: type = type(None)  # the method's recipe (its config.py)
    default_backbone: str = "resnet18"
    default_image_size: int | None = None  # None: the backbone set-up's
    # The map AU-PRO is computed on (a key of ``anomaly_maps``), where a paper uses another
    # map for PRO than for pixel AUROC.
    pro_map: str = "map"
    # Extension points of the trainer and scorer (defaults: the plain loop):
    # fits_from_data: no optimiser; ``train`` calls ``fit`` once over the training cache (kNN).
    fits_from_data: bool = False
    # steps_in_batch: ``train_batch`` takes the optimiser steps of an image batch itself
    # (CFlow: one per fiber batch); the trainer only reads the loss it returns.
    steps_in_batch: bool = False

    def __init__(self, backbone: Extractor):
        super().__init__()
        self.backbone = backbone
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> "FlowMethod":
        super().train(mode)
        self.backbone.eval()  # frozen: batch-norm statistics never move
        return self

    @property
    def image_size(self) -> tuple[int, int]:
        return self.backbone.spec.image_size

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Images in [0, 1], (B, 3, H, W) at ``image_size`` -> cached-feature layout."""
        return self.backbone(images)

    # ---- to implement -------------------------------------------------------------
    def forward(self, features: list[torch.Tensor], with_log_jac: bool = True) -> FlowOutput:
        raise NotImplementedError

    def loss(self, out: FlowOutput) -> torch.Tensor:
        """Scalar training loss (mean negative log-likelihood per the method's recipe)."""
        raise NotImplementedError

    def anomaly_maps(self, out: FlowOutput, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Higher = more anomalous. Must return at least
        ``{"map": (B, H, W) at ``size``, "score": (B,)}``; may add more maps (e.g.
        ``"log_nfa"``) and scores (e.g. ``"score_max"``) which are saved alongside."""
        raise NotImplementedError

    @classmethod
    def from_params(cls, extractor: Extractor, **params: Any) -> "FlowMethod":
        """The method on ``extractor`` with its config built from ``params`` (unknown keys raise)."""
        raise NotImplementedError

    def train_setup(self, epochs: int, steps_per_epoch: int, lr: float | None = None) -> TrainSetup:
        """Optimiser and schedule; ``lr`` None: the recipe's (the trainer passes the job's)."""
        raise NotImplementedError

    # ---- extension points (see the class attributes above) ---------------------------
    def fit(self, batches: Iterable[list[torch.Tensor]], generator: torch.Generator) -> None:
        """``fits_from_data`` methods: one pass over the training features; random choices
        drawn from ``generator`` (seeded by the run's seed)."""
        raise NotImplementedError(f"{self.name}: fits_from_data is set but fit() is missing")

    def train_batch(self, features: list[torch.Tensor], setup: TrainSetup, generator: torch.Generator) -> torch.Tensor:
        """``steps_in_batch`` methods: the optimiser steps for one image batch (and the
        scheduler where it steps per batch), random draws from ``generator`` (seeded by
        (seed, epoch)); returns the batch's mean loss, detached."""
        raise NotImplementedError(f"{self.name}: steps_in_batch is set but train_batch() is missing")

    def finalize_maps(self, maps: dict[str, torch.Tensor], size: tuple[int, int],
                      reference: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The whole test set's ``anomaly_maps`` outputs, concatenated, before they are saved:
        a method whose map is normalised over the set (CFlow) recomputes it here. With
        ``reference`` (the test set's outputs), ``maps`` are the validation images': a
        set-level normalisation then uses the reference's constants, so that a threshold
        chosen on the validation maps means the same on the test maps."""
        return maps

    # ---- convenience for users ------------------------------------------------------
    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.forward(self.extract(images), with_log_jac=False)
        return self.anomaly_maps(out, tuple(images.shape[-2:]))
