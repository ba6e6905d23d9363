"""U-Flow in the registry: ``create("uflow", backbone="ms_cait")``.

Files: ``config.py`` (UFlowConfig), ``model.py`` (the U-shaped flow and the FlowMethod),
``nfa.py`` (the a-contrario -log10 NFA map). See docs/methods/uflow.md.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from uadflows.backbones.base import Extractor
from uadflows.methods import register
from uadflows.methods.uflow.config import UFlowConfig, image_size_pair
from uadflows.methods.uflow.model import FlowStage, UFlow, UShapedFlow
from uadflows.methods.uflow.nfa import (
    log10_number_of_tests,
    log10_pixel_tail,
    log_nfa_map,
    region_log10_prob_map,
)


@register("uflow")
def create_uflow(
    backbone: str | Extractor = "ms_cait",
    pretrained: bool | str | os.PathLike = True,
    image_size: int | tuple[int, int] | None = None,
    cache_dir: str | os.PathLike | None = None,
    **params: Any,
) -> UFlow:
    """U-Flow on an extractor set-up name (built by ``uadflows.backbones``) or a ready
    ``Extractor``.

    pretrained: True (released weights), False (random, for tests) or a weights file path.
    image_size: None = the recipe's 448 px (or the given extractor's size).
    params: ``UFlowConfig`` fields (batch_size, epochs, lr, n_scales, ...); unknown keys raise.
    """
    values = asdict(UFlowConfig())
    unknown = sorted(set(params) - set(values))
    if unknown:
        raise KeyError(f"uflow: unknown parameter(s) {unknown}; known: {sorted(values)}")
    values.update(params)
    if isinstance(backbone, Extractor):
        extractor = backbone
        size = tuple(extractor.spec.image_size)
        if image_size is not None and image_size_pair(image_size) != size:
            raise ValueError(f"uflow: image_size {image_size} differs from the given extractor's {size}")
        values["image_size"] = size[0] if size[0] == size[1] else size
        return UFlow(extractor, UFlowConfig.from_dict(values))
    if image_size is not None:
        values["image_size"] = image_size
    config = UFlowConfig.from_dict(values)
    from uadflows.backbones import create_extractor  # imported here: heavy, and optional

    extractor = create_extractor(
        backbone,
        image_size=config.image_size,
        pretrained=bool(pretrained),
        weights_file=pretrained if isinstance(pretrained, (str, os.PathLike)) else None,
        cache_dir=cache_dir,
    )
    return UFlow(extractor, config)


__all__ = [
    "FlowStage",
    "UFlow",
    "UFlowConfig",
    "UShapedFlow",
    "create_uflow",
    "log10_number_of_tests",
    "log10_pixel_tail",
    "log_nfa_map",
    "region_log10_prob_map",
]
