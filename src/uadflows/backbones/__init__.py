"""Frozen feature extractors: ``create_extractor("resnet18", pretrained=False)``.

Set-ups (``available()``): ``resnet18``, ``wide_resnet50_2`` and ``tf_efficientnet_lite0``
(timm ``features_only``, stages 1-3, strides 4/8/16, 256 px by default, any size),
``wide_resnet50_2_l234`` (CFlow-AD's: WRN50-2 stages 2-4, strides 8/16/32),
``cait_m48_448`` (41 blocks + norm, 448 px), ``deit_base_distilled_patch16_384`` (8 blocks +
norm, 384 px), ``cait_s24_224`` (21 blocks + norm, 224 px), ``ms_cait`` (U-Flow: the first
and the last of those on a bicubic 224 px copy of the image). Any other timm CNN name works
as a generic ``features_only`` set-up.

Weights (see ``weights``): ``pretrained=False`` random; ``weights_file`` a local state dict
in timm naming; tf_efficientnet_lite0's packaged ImageNet weights (offline); else timm's
release, from ``cache_dir`` (offline) or the hub. ``weights_tag`` names them exactly (a timm
``arch.tag``, a file's sha256, the package's file), without importing torch.
"""

from __future__ import annotations

import os
from typing import Any

from uadflows.backbones.tags import weights_tag

# Imported on first use: ``Extractor`` needs torch, while ``weights_tag`` and the specs
# (the planner, the report) must not.
_LAZY = {
    "Extractor": "uadflows.backbones.base", "SpecOnlyExtractor": "uadflows.backbones.base",
    "ExtractorSpec": "uadflows.backbones.spec",
    "available": "uadflows.backbones.setups", "extractor_spec": "uadflows.backbones.setups",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'uadflows.backbones' has no attribute {name!r}")


def create_extractor(
    name: str,
    *,
    image_size: int | tuple[int, int] | None = None,
    pretrained: bool = True,
    weights_file: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Extractor:
    """A frozen extractor in eval mode: images in [0, 1] (B, 3, H, W) at
    ``spec.image_size`` -> list of (B, C_s, H_s, W_s); normalisation happens inside.
    (A weightless stand-in with the same spec: ``SpecOnlyExtractor(extractor_spec(...))``.)"""
    from uadflows.backbones import weights
    from uadflows.backbones.setups import (MULTI_SETUPS, PYRAMID_SETUPS, VIT_SETUPS, cnn_setup, extractor_spec,
                                           kind_of, split_name, timm_name)

    spec = extractor_spec(name, image_size=image_size, pretrained=pretrained, weights_file=weights_file)
    kind = kind_of(name)
    if kind == "multi":
        from uadflows.backbones.vit import MultiScaleExtractor, build_vit

        parts = []
        for part in MULTI_SETUPS[name].parts:
            part_spec = extractor_spec(part, pretrained=pretrained)
            source = weights.resolve(part, pretrained=pretrained, cache_dir=cache_dir)
            parts.append(build_vit(part_spec, source, VIT_SETUPS[part]))
        return MultiScaleExtractor(spec, parts)
    if kind == "pyramid":
        from uadflows.backbones.pyramid import build_pyramid

        setup = PYRAMID_SETUPS[name]
        source = weights.resolve(setup.model, pretrained=pretrained, weights_file=weights_file, cache_dir=cache_dir)
        return build_pyramid(spec, source, setup)
    source = weights.resolve(timm_name(name), pretrained=pretrained, weights_file=weights_file, cache_dir=cache_dir)
    if kind == "vit":
        from uadflows.backbones.vit import build_vit

        return build_vit(spec, source, VIT_SETUPS[split_name(name)[0]])
    from uadflows.backbones.timm_backbones import build_cnn

    return build_cnn(spec, source, cnn_setup(name).out_indices)


__all__ = ["Extractor", "ExtractorSpec", "available", "create_extractor", "extractor_spec", "weights", "weights_tag"]
