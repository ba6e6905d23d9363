"""MSFlow in the method registry: ``create("msflow", backbone="wide_resnet50_2")``.

Files: ``config`` (typed recipe), ``parallel`` (per-scale conditional flows and the
positional encoding), ``fusion`` (the cross-scale fusion flow), ``postprocess`` (the
"add" map and "mul" score), ``schedule`` (warm-up + step decay), ``model`` (MSFlow).
"""

from __future__ import annotations

import os

from uadflows.backbones.base import Extractor
from uadflows.methods import register
from uadflows.methods.msflow.config import MSFlowConfig
from uadflows.methods.msflow.model import MSFlow


def _as_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


@register("msflow")
def create_msflow(
    backbone: str | Extractor = "wide_resnet50_2",
    pretrained: bool | str | os.PathLike = True,
    image_size: int | tuple[int, int] | None = None,
    cache_dir: str | os.PathLike | None = None,
    **params,
) -> MSFlow:
    """MSFlow on an extractor set-up name (built by ``uadflows.backbones``) or on a ready
    ``Extractor``. ``pretrained`` may be a weights file path; ``image_size`` None means
    the recipe's 512 px; ``params`` are ``MSFlowConfig`` fields (unknown keys raise)."""
    config = MSFlowConfig.from_kwargs(**params)
    if isinstance(backbone, Extractor):
        extractor = backbone
        if image_size is not None and _as_pair(image_size) != tuple(extractor.spec.image_size):
            raise ValueError(
                f"msflow: image_size {image_size} differs from the given extractor's "
                f"{tuple(extractor.spec.image_size)}"
            )
    else:
        from uadflows.backbones import create_extractor  # imported here: heavy, and optional

        weights_file = pretrained if isinstance(pretrained, (str, os.PathLike)) else None
        extractor = create_extractor(
            backbone,
            image_size=config.image_size if image_size is None else image_size,
            pretrained=bool(pretrained),
            weights_file=weights_file,
            cache_dir=cache_dir,
        )
    return MSFlow(extractor, config)


__all__ = ["MSFlow", "MSFlowConfig", "create_msflow"]
