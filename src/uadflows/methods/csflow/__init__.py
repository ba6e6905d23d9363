"""CS-Flow in the method registry: ``create("csflow", backbone="cs_effnet_b5")``.

Files: ``config`` (typed recipe), ``coupling`` (cross-scale subnets, coupling, flow),
``anomaly_map`` (the official image score, our pixel map), ``model`` (CSFlow).
See docs/methods/csflow.md.
"""

from __future__ import annotations

import os

from uadflows.backbones.base import Extractor
from uadflows.methods import register
from uadflows.methods.csflow.anomaly_map import csflow_anomaly_maps
from uadflows.methods.csflow.config import CSFlowConfig
from uadflows.methods.csflow.coupling import CrossConvolutions, CrossScaleCoupling, CrossScaleFlow
from uadflows.methods.csflow.model import CSFlow


def _as_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


@register("csflow")
def create_csflow(
    backbone: str | Extractor = "cs_effnet_b5",
    pretrained: bool | str | os.PathLike = True,
    image_size: int | tuple[int, int] | None = None,
    cache_dir: str | os.PathLike | None = None,
    **params,
) -> CSFlow:
    """CS-Flow on a multi-scale extractor set-up name (``cs_effnet_b5``, the paper's;
    ``cs_effnet_lite0``, the CPU option) or a ready ``Extractor``. ``pretrained`` may be a
    weights file path; ``image_size`` None means the recipe's 768 px; ``params`` are
    ``CSFlowConfig`` fields (unknown keys raise)."""
    config = CSFlowConfig.from_kwargs(**params)
    if isinstance(backbone, Extractor):
        extractor = backbone
        if image_size is not None and _as_pair(image_size) != tuple(extractor.spec.image_size):
            raise ValueError(
                f"csflow: image_size {image_size} differs from the given extractor's {tuple(extractor.spec.image_size)}"
            )
    else:
        from uadflows.backbones import create_extractor  # imported here: heavy, and optional

        extractor = create_extractor(
            backbone,
            image_size=config.image_size if image_size is None else image_size,
            pretrained=bool(pretrained),
            weights_file=pretrained if isinstance(pretrained, (str, os.PathLike)) else None,
            cache_dir=cache_dir,
        )
    return CSFlow(extractor, config)


__all__ = [
    "CSFlow", "CSFlowConfig", "CrossConvolutions", "CrossScaleCoupling", "CrossScaleFlow",
    "create_csflow", "csflow_anomaly_maps",
]
