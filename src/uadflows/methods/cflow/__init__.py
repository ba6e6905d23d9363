"""CFlow-AD in the registry: ``create("cflow", backbone="wide_resnet50_2")``.

Files: ``config`` (typed recipe, torch-free), ``model`` (decoders, fiber training),
``anomaly_map`` (per-dimension log-likelihoods, the official set-level map and score),
``schedule`` (warm-up + cosine mapped onto plain epochs). See docs/methods/cflow.md.
"""

from __future__ import annotations

import os

from uadflows.backbones.base import Extractor
from uadflows.methods import register
from uadflows.methods.cflow.config import CFlowConfig
from uadflows.methods.cflow.model import CFlow


@register("cflow")
def create_cflow(
    backbone: str | Extractor = "wide_resnet50_2",
    pretrained: bool | str | os.PathLike = True,
    image_size: int | tuple[int, int] | None = None,
    cache_dir: str | os.PathLike | None = None,
    **params,
) -> CFlow:
    """CFlow on an extractor set-up name or a ready ``Extractor``; ``image_size`` None
    means the recipe's 256 px; ``params`` are ``CFlowConfig`` fields (unknown keys raise)."""
    config = CFlowConfig.from_kwargs(**params)
    if isinstance(backbone, Extractor):
        size = tuple(backbone.spec.image_size)
        pair = (image_size, image_size) if isinstance(image_size, int) else image_size
        if image_size is not None and tuple(pair) != size:
            raise ValueError(f"cflow: image_size {image_size} differs from the given extractor's {size}")
        return CFlow(backbone, config)
    from uadflows.backbones import create_extractor  # imported here: heavy, and optional

    extractor = create_extractor(
        backbone,
        image_size=config.image_size if image_size is None else image_size,
        pretrained=bool(pretrained),
        weights_file=pretrained if isinstance(pretrained, (str, os.PathLike)) else None,
        cache_dir=cache_dir,
    )
    return CFlow(extractor, config)


__all__ = ["CFlow", "CFlowConfig", "create_cflow"]
