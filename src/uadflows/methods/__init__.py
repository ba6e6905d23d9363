"""Method registry: ``create("fastflow", backbone="resnet18", pretrained=False)``.

Adding a method = one folder here, found on first use, with these files:

- ``__init__.py``: exports, resolved on first use (``lazy_exports``), so that importing
  the package or its ``config`` never imports torch;
- ``config.py``: the method's typed recipe, a dataclass whose fields are the config's
  ``params`` plus the trainer defaults ``epochs``, ``batch_size`` and ``lr`` (the plan
  resolves those into ``JobSpec.train``; the trainer never reads them back from a model),
  torch-free, ending with ``LABEL`` (tables, figures) and ``RECIPE`` (that dataclass);
- ``model.py``: the ``FlowMethod`` subclass and its modules, registered with one line,
  ``@register("name")`` (it sets the class's ``name``); the class also gives ``label``
  (tables, figures), ``config_class``, ``default_backbone``, ``default_image_size`` and
  ``from_params(extractor, **params)``;
- ``anomaly_map.py``: maps and image scores from the latents;
- extras where a method needs them (msflow: fusion, parallel, schedule; uflow: nfa).

The registry is lazy: ``available`` lists the folders, ``recipe`` and ``label`` read
``config.py``; only ``get``/``create`` import a ``model.py`` (and torch). Planning,
``check-config`` and the report never pay torch's start-up.

``create`` is the one builder of what every method needs before its own parts: the
backbone (a set-up name or a ready ``Extractor``), its input size, its weights (pretrained
flag or a weights file) or, with ``build_backbone=False``, a weightless
``SpecOnlyExtractor`` (training and scoring read cached features).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

from uadflows.lazy import lazy_exports  # noqa: F401  (re-exported for the method packages)

if TYPE_CHECKING:
    from uadflows.backbones.base import Extractor
    from uadflows.methods.base import FlowMethod

_REGISTRY: dict[str, type[FlowMethod]] = {}
_BASE_EXPORTS = ("FlowMethod", "FlowOutput", "TrainSetup")  # torch: resolved on use


def register(name: str) -> Callable[[type[FlowMethod]], type[FlowMethod]]:
    """Class decorator: ``@register("fastflow") class FastFlow(FlowMethod)``."""

    def deco(cls: type[FlowMethod]) -> type[FlowMethod]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method {name!r} registered twice ({_REGISTRY[name].__module__}, {cls.__module__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


@cache
def available() -> list[str]:
    """The method folders (each registers the name of its folder); nothing imported."""
    return sorted(info.name for info in pkgutil.iter_modules(__path__) if info.ispkg)


def _config_module(name: str) -> ModuleType:
    if name not in available():
        raise KeyError(f"unknown method {name!r}; available: {', '.join(available())}")
    return importlib.import_module(f"{__name__}.{name}.config")


def recipe_class(name: str) -> type:
    """The method's typed recipe (its config.py's ``RECIPE``), without torch."""
    return _config_module(name).RECIPE


def label(name: str) -> str:
    """How tables and figures name the method (its config.py's ``LABEL``), without torch."""
    return _config_module(name).LABEL


def recipe(name: str) -> dict[str, float | int]:
    """The trainer defaults of a method's recipe (its config.py), without torch."""
    defaults = recipe_class(name)()
    return {"epochs": defaults.epochs, "batch_size": defaults.batch_size, "lr": defaults.lr}


def get(name: str) -> type[FlowMethod]:
    """The method's class: imports its model.py (and torch) on first use."""
    _config_module(name)  # an unknown name fails here, before any import
    if name not in _REGISTRY:
        importlib.import_module(f"{__name__}.{name}.model")
    if name not in _REGISTRY:
        raise KeyError(f"method folder {name!r}: its model.py registers no @register({name!r}) class")
    return _REGISTRY[name]


def __getattr__(attr: str) -> Any:
    if attr in _BASE_EXPORTS:
        from uadflows.methods import base

        return getattr(base, attr)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def build_extractor(
    backbone: str | Extractor,
    *,
    image_size: int | tuple[int, int] | None = None,
    pretrained: bool | str | os.PathLike = True,
    cache_dir: str | os.PathLike | None = None,
    build_backbone: bool = True,
    method: str = "",
) -> Extractor:
    """An extractor by set-up name (``pretrained`` may be a weights file), or ``backbone``
    itself when it is one (its size must then match ``image_size``)."""
    from uadflows.backbones.base import Extractor

    if isinstance(backbone, Extractor):
        size = tuple(backbone.spec.image_size)
        if image_size is not None and _pair(image_size) != size:
            raise ValueError(f"{method}: image_size {image_size} differs from the given extractor's {size}")
        return backbone
    from uadflows.backbones import create_extractor, extractor_spec  # heavy: imported on use
    from uadflows.backbones.base import SpecOnlyExtractor

    weights_file = None if isinstance(pretrained, bool) else pretrained
    args = dict(image_size=image_size, pretrained=weights_file is not None or bool(pretrained),
                weights_file=weights_file)
    if not build_backbone:
        return SpecOnlyExtractor(extractor_spec(backbone, **args))
    return create_extractor(backbone, cache_dir=cache_dir, **args)


def create(
    name: str,
    *,
    backbone: str | Extractor | None = None,
    pretrained: bool | str | os.PathLike = True,
    image_size: int | tuple[int, int] | None = None,
    cache_dir: str | os.PathLike | None = None,
    build_backbone: bool = True,
    **params,
) -> FlowMethod:
    """Build a method. ``image_size`` None: a given extractor's, else the recipe's;
    ``params``: fields of the method's config (unknown keys raise)."""
    from uadflows.backbones.base import Extractor

    cls = get(name)
    if image_size is None and not isinstance(backbone, Extractor):
        image_size = params.pop("image_size", None) or cls.default_image_size
    extractor = build_extractor(backbone if backbone is not None else cls.default_backbone,
                                image_size=image_size, pretrained=pretrained, cache_dir=cache_dir,
                                build_backbone=build_backbone, method=name)
    return cls.from_params(extractor, **params)


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


__all__ = ["FlowMethod", "FlowOutput", "TrainSetup", "available", "build_extractor", "create", "get", "label",
           "lazy_exports", "recipe", "recipe_class", "register"]
