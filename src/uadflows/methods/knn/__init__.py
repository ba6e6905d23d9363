"""The kNN floor in the registry: ``create("knn", backbone="wide_resnet50_2")``.

Files: ``config`` (typed recipe, torch-free), ``anomaly_map`` (nearest distances, the map
and image score), ``model`` (KnnFloor). See docs/methods/knn.md.
"""

from __future__ import annotations

import os

from uadflows.backbones.base import Extractor
from uadflows.methods import register
from uadflows.methods.knn.config import KnnConfig
from uadflows.methods.knn.model import KnnFloor


@register("knn")
def create_knn(
    backbone: str | Extractor = "wide_resnet50_2",
    pretrained: bool | str | os.PathLike = True,
    image_size: int | tuple[int, int] | None = None,
    cache_dir: str | os.PathLike | None = None,
    **params,
) -> KnnFloor:
    """kNN on an extractor set-up name or a ready ``Extractor``; ``params`` are
    ``KnnConfig`` fields (unknown keys raise)."""
    config = KnnConfig.from_kwargs(**params)
    if isinstance(backbone, Extractor):
        size = tuple(backbone.spec.image_size)
        pair = (image_size, image_size) if isinstance(image_size, int) else image_size
        if image_size is not None and tuple(pair) != size:
            raise ValueError(f"knn: image_size {image_size} differs from the given extractor's {size}")
        return KnnFloor(backbone, config)
    from uadflows.backbones import create_extractor  # imported here: heavy, and optional

    extractor = create_extractor(
        backbone,
        image_size=config.image_size if image_size is None else image_size,
        pretrained=bool(pretrained),
        weights_file=pretrained if isinstance(pretrained, (str, os.PathLike)) else None,
        cache_dir=cache_dir,
    )
    return KnnFloor(extractor, config)


__all__ = ["KnnConfig", "KnnFloor", "create_knn"]
