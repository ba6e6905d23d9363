"""The backbone set-ups as data, and their specs computed without building a model.

A set-up name is a key of ``CNN_SETUPS`` / ``VIT_SETUPS`` / ``MULTI_SETUPS`` /
``PYRAMID_SETUPS``, or any other
timm CNN name (generic ``features_only``, out_indices (1, 2, 3)). A timm pretrained tag may
follow the architecture ("resnet18.tv_in1k"): same set-up, those weights.

The tables hold everything planning needs (channels, strides, normalisation; timm's default
weights tags are tags.DEFAULT_TAGS), so a plan of the set-ups never imports torch or timm; tests check the tables
against timm. Generic timm names and tagged names ask timm, imported on use.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from uadflows.backbones import weights as W
from uadflows.backbones.spec import ExtractorSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class CnnSetup:
    """timm ``features_only`` CNN. channels/strides None: read from a meta-device model.
    model: the timm architecture when the set-up's name is not one (another choice of
    stages of the same network and weights); a weights tag on the set-up's name goes to it."""

    default_size: int = 256
    out_indices: tuple[int, ...] = (1, 2, 3)
    channels: tuple[int, ...] | None = None
    strides: tuple[int, ...] | None = None
    mean: tuple[float, float, float] | None = None  # None: timm's pretrained config
    std: tuple[float, float, float] | None = None
    model: str | None = None


@dataclass(frozen=True)
class VitSetup:
    """Patch tokens of a timm ViT/CaiT after the first ``blocks`` blocks and the final norm.

    prefix_tokens: the timm attributes of the tokens prepended before the blocks (class,
    distillation), dropped from the output.
    Fixed input size: the position embedding is learnt for ``image_size``.
    """

    image_size: int
    blocks: int
    dim: int
    prefix_tokens: tuple[str, ...]
    patch: int = 16
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass(frozen=True)
class MultiSetup:
    """Several ViT set-ups on one image; each part sees it resized (bicubic) to its size."""

    image_size: int
    parts: tuple[str, ...]


@dataclass(frozen=True)
class PyramidSetup:
    """One CNN run up to the end of stage ``stages - 1`` on the image at scales 1, 1/2, 1/4
    (CS-Flow): one map per scale, same channels, each half the size of the previous one.

    model: timm name with pretrained tag (the untagged tf_efficientnet_lite0: packaged weights).
    stride: the stride of that stage; image sides must be multiples of stride * 2**(n_scales-1)
        so the maps halve exactly (the cross-scale convolutions need it).
    resize: interpolation mode of the smaller copies ("nearest" as CS-Flow's
        ``F.interpolate`` default).
    """

    model: str
    stages: int
    channels: int
    stride: int
    image_size: int
    n_scales: int = 3
    resize: str = "nearest"
    mean: tuple[float, float, float] | None = None  # None: timm's pretrained config
    std: tuple[float, float, float] | None = None


CNN_SETUPS: dict[str, CnnSetup] = {
    "resnet18": CnnSetup(channels=(64, 128, 256), strides=(4, 8, 16), mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "wide_resnet50_2": CnnSetup(channels=(256, 512, 1024), strides=(4, 8, 16), mean=IMAGENET_MEAN,
                                std=IMAGENET_STD),
    # CFlow-AD's encoder (gudovskiy/cflow-ad model.py:93-112): WRN50-2 layer2/3/4.
    "wide_resnet50_2_l234": CnnSetup(out_indices=(2, 3, 4), channels=(512, 1024, 2048), strides=(8, 16, 32),
                                     mean=IMAGENET_MEAN, std=IMAGENET_STD, model="wide_resnet50_2"),
    # The demo default: packaged ImageNet weights (efficientnet_lite0.py), TF "same" padding.
    "tf_efficientnet_lite0": CnnSetup(channels=(24, 40, 112), strides=(4, 8, 16), mean=(0.5,) * 3, std=(0.5,) * 3),
}
VIT_SETUPS: dict[str, VitSetup] = {
    # FastFlow (paper Table 6: block index 40) and U-Flow's fine scale.
    "cait_m48_448": VitSetup(image_size=448, blocks=41, dim=768, prefix_tokens=()),
    # FastFlow: block index 7; class and distillation tokens dropped.
    "deit_base_distilled_patch16_384": VitSetup(image_size=384, blocks=8, dim=768, prefix_tokens=("cls_token", "dist_token")),
    # U-Flow's coarse scale (mtailanian/uflow src/feature_extraction.py: 21 blocks + norm).
    "cait_s24_224": VitSetup(image_size=224, blocks=21, dim=384, prefix_tokens=()),
}
MULTI_SETUPS: dict[str, MultiSetup] = {
    # U-Flow's MS-CaiT, in its order: fine (768, 28, 28) then coarse (384, 14, 14).
    "ms_cait": MultiSetup(image_size=448, parts=("cait_m48_448", "cait_s24_224")),
}


PYRAMID_SETUPS: dict[str, PyramidSetup] = {
    # CS-Flow (marco-rudolph/cs-flow model.py:47-65, config.py:13,31): EfficientNet-B5 up to
    # block 35 (the last of timm's stage 5: 304 channels, stride 32) at 768, 384, 192 px.
    # Weights: efficientnet_pytorch's "efficientnet-b5" is a port of Google's first TF
    # checkpoint release, the one timm ships as tf_efficientnet_b5.in1k.
    "cs_effnet_b5": PyramidSetup("tf_efficientnet_b5.in1k", stages=6, channels=304, stride=32, image_size=768),
    # The CPU option: the same stage of EfficientNet-Lite0 (192 channels, stride 32) with the
    # packaged ImageNet weights (offline).
    "cs_effnet_lite0": PyramidSetup(
        "tf_efficientnet_lite0", stages=6, channels=192, stride=32, image_size=256, mean=(0.5,) * 3, std=(0.5,) * 3
    ),
}


def available() -> list[str]:
    return sorted({*CNN_SETUPS, *VIT_SETUPS, *MULTI_SETUPS, *PYRAMID_SETUPS})


def split_name(name: str) -> tuple[str, str]:
    """"resnet18.tv_in1k" -> ("resnet18", "tv_in1k"); a known set-up name has no tag."""
    if not isinstance(name, str) or not name:
        raise KeyError(f"backbone name must be a non-empty string, got {name!r}")
    if name in MULTI_SETUPS or name in PYRAMID_SETUPS or "." not in name:
        return name, ""
    import timm

    return timm.models.split_model_name_tag(name)


def kind_of(name: str) -> str:
    """"cnn", "vit", "multi" or "pyramid"; KeyError for a name neither we nor timm know."""
    arch, _ = split_name(name)
    if arch in MULTI_SETUPS:
        return "multi"
    if arch in PYRAMID_SETUPS:
        return "pyramid"
    if arch in VIT_SETUPS:
        return "vit"
    if arch in CNN_SETUPS:
        return "cnn"
    import timm

    if not timm.is_model(arch):
        raise KeyError(
            f"unknown backbone {name!r}: neither a set-up ({', '.join(available())}) nor a timm model name"
        )
    return "cnn"


def timm_models(name: str) -> list[str]:
    """The timm model names (with tag, if given) a set-up builds."""
    kind = kind_of(name)
    if kind == "multi":
        return list(MULTI_SETUPS[name].parts)
    if kind == "pyramid":
        return [PYRAMID_SETUPS[name].model]
    return [timm_name(name)]


def timm_name(name: str) -> str:
    """The timm model (with the name's tag) behind a single-model CNN or ViT set-up name:
    the name itself unless its set-up says ``model``."""
    arch, tag = split_name(name)
    model = CNN_SETUPS[arch].model if arch in CNN_SETUPS else None
    if model is None:
        return name
    return f"{model}.{tag}" if tag else model


def as_size(image_size: int | tuple[int, int] | list[int] | None, default: int, name: str) -> tuple[int, int]:
    if image_size is None:
        return (default, default)
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in image_size
    ):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise ValueError(f"backbone {name!r}: image_size must be an int or (H, W) ints, got {image_size!r}")
    if min(size) < 32:
        raise ValueError(f"backbone {name!r}: image_size {size} is below 32 px")
    return size


def _cnn_shape_info(name: str, setup: CnnSetup, size: tuple[int, int]) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    if setup.channels is not None and setup.strides is not None:
        # Convolutions padded "same" (timm ResNets, TF EfficientNets): ceil(H / stride).
        shapes = tuple((math.ceil(size[0] / s), math.ceil(size[1] / s)) for s in setup.strides)
        return setup.channels, shapes
    # Any other timm CNN: trace shapes on the meta device (no memory, no init time).
    import timm
    import torch

    try:
        with torch.device("meta"):
            model = timm.create_model(split_name(timm_name(name))[0], features_only=True, out_indices=setup.out_indices)
            feats = model(torch.empty(1, 3, *size))
    except Exception as err:
        raise ValueError(f"backbone {name!r}: timm cannot build it with features_only, out_indices={setup.out_indices} ({err})") from None
    return tuple(f.shape[1] for f in feats), tuple((f.shape[2], f.shape[3]) for f in feats)


def _norm(name: str, mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if mean is not None:
        return tuple(mean), tuple(std)
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std)


def cnn_setup(name: str) -> CnnSetup:
    return CNN_SETUPS.get(split_name(name)[0], CnnSetup())


def vit_spec(name: str, setup: VitSetup, weights_id: str, image_size=None) -> ExtractorSpec:
    size = as_size(image_size, setup.image_size, name)
    if size != (setup.image_size, setup.image_size):
        raise ValueError(
            f"backbone {name!r}: image_size must be {setup.image_size} (its position embedding is "
            f"learnt for that size), got {size}"
        )
    grid = setup.image_size // setup.patch
    return ExtractorSpec(
        name=name, image_size=size, channels=(setup.dim,), shapes=((grid, grid),),
        mean=setup.mean, std=setup.std, weights=weights_id,
        layers=f"blocks[:{setup.blocks}]+norm",
    )


def pyramid_spec(name: str, setup: PyramidSetup, weights_id: str, image_size=None) -> ExtractorSpec:
    size = as_size(image_size, setup.image_size, name)
    step = setup.stride * 2 ** (setup.n_scales - 1)
    if size[0] % step or size[1] % step:
        raise ValueError(
            f"backbone {name!r}: image_size {size} must be a multiple of {step} on both sides "
            f"(stride {setup.stride} at {setup.n_scales} scales, each half the previous one)"
        )
    shapes = tuple((size[0] // setup.stride >> s, size[1] // setup.stride >> s) for s in range(setup.n_scales))
    mean, std = _norm(setup.model, setup.mean, setup.std)
    scales = ",".join(f"1/{2 ** s}" for s in range(setup.n_scales))
    return ExtractorSpec(
        name=name, image_size=size, channels=(setup.channels,) * setup.n_scales, shapes=shapes,
        mean=mean, std=std, weights=weights_id,
        layers=f"{setup.model}:conv_stem+bn1+blocks[:{setup.stages}]@{scales};{setup.resize}",
    )


def extractor_spec(
    name: str,
    image_size: int | tuple[int, int] | None = None,
    pretrained: bool = True,
    weights_file: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ExtractorSpec:
    """The spec of a set-up, without building its model (cheap: the workflow names feature
    cache folders with it). ``cache_dir`` never changes it: it only says where weights are."""
    kind = kind_of(name)
    arch, _ = split_name(name)
    if kind == "multi":
        setup = MULTI_SETUPS[arch]
        if weights_file is not None:
            raise ValueError(f"backbone {name!r} combines {', '.join(setup.parts)}: one weights_file cannot hold both; import each into a cache_dir")
        size = as_size(image_size, setup.image_size, name)
        if size != (setup.image_size, setup.image_size):
            raise ValueError(f"backbone {name!r}: image_size must be {setup.image_size}, got {size}")
        parts = [vit_spec(p, VIT_SETUPS[p], W.resolve(p, pretrained=pretrained).weights_id) for p in setup.parts]
        ids = {p.weights for p in parts}
        weights_id = ids.pop() if len(ids) == 1 else "+".join(p.weights for p in parts)
        resized = [f"{p.name}@{p.image_size[0]}:{p.layers}" for p in parts]
        return ExtractorSpec(
            name=name, image_size=size, channels=tuple(p.channels[0] for p in parts),
            shapes=tuple(p.shapes[0] for p in parts), mean=parts[0].mean, std=parts[0].std,
            weights=weights_id, layers="|".join(resized) + ";bicubic",
        )
    if kind == "pyramid":
        setup = PYRAMID_SETUPS[arch]
        weights_id = W.resolve(setup.model, pretrained=pretrained, weights_file=weights_file).weights_id
        return pyramid_spec(name, setup, weights_id, image_size)
    weights_id = W.resolve(timm_name(name), pretrained=pretrained, weights_file=weights_file).weights_id
    if kind == "vit":
        return vit_spec(name, VIT_SETUPS[arch], weights_id, image_size)
    setup = cnn_setup(name)
    size = as_size(image_size, setup.default_size, name)
    channels, shapes = _cnn_shape_info(name, setup, size)
    mean, std = _norm(timm_name(name), setup.mean, setup.std)
    return ExtractorSpec(
        name=name, image_size=size, channels=channels, shapes=shapes, mean=mean, std=std,
        weights=weights_id, layers="features_only:out_indices=" + ",".join(map(str, setup.out_indices)),
    )
