"""Method registry: ``create("fastflow", backbone="resnet18", pretrained=False)``.

Each method lives in its own module and registers a factory with ``@register``. A factory
takes ``backbone`` (an extractor name), ``pretrained`` (bool, or a path to a weights file),
``image_size`` (None: the recipe's) and the method's own keyword parameters, and returns a
``FlowMethod``.
"""

from __future__ import annotations

import importlib
from typing import Callable

from uadflows.backbones.base import SPEC_ONLY
from uadflows.methods.base import FlowMethod, FlowOutput, TrainSetup

_REGISTRY: dict[str, Callable[..., FlowMethod]] = {}
# Modules imported on first use, so `import uadflows.methods` stays light.
_MODULES = {
    "fastflow": "uadflows.methods.fastflow",
    "msflow": "uadflows.methods.msflow",
    "uflow": "uadflows.methods.uflow",
    "knn": "uadflows.methods.knn",
    "cflow": "uadflows.methods.cflow",
}


def register(name: str):
    def deco(factory: Callable[..., FlowMethod]):
        _REGISTRY[name] = factory
        return factory

    return deco


def available() -> list[str]:
    return sorted(_MODULES)


def create(name: str, *, build_backbone: bool = True, **kwargs) -> FlowMethod:
    """Build a method. ``build_backbone=False`` gives it a weightless backbone stand-in
    (same spec): what training and scoring from the feature cache need."""
    if name not in _MODULES:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(available())}")
    if name not in _REGISTRY:
        importlib.import_module(_MODULES[name])
    token = SPEC_ONLY.set(not build_backbone)
    try:
        return _REGISTRY[name](**kwargs)
    finally:
        SPEC_ONLY.reset(token)


__all__ = ["FlowMethod", "FlowOutput", "TrainSetup", "create", "register", "available"]
