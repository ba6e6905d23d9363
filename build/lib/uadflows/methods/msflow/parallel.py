"""MSFlow's parallel flows: one conditional FrEIA flow per scale (`models/flow_models.py`)."""

from __future__ import annotations

import math

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import torch
from torch import nn


class ConvLayerNormSubnet(nn.Module):
    """Coupling subnet conv3x3 - LayerNorm(channels) - ReLU - conv3x3, hidden width = input."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_in, 3, padding=1)
        self.norm = nn.LayerNorm(channels_in)
        self.conv2 = nn.Conv2d(channels_in, channels_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.conv1(x)
        # LayerNorm over channels only, at every pixel: move channels last and back.
        hidden = self.norm(hidden.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.conv2(torch.relu(hidden))


def positional_encoding_2d(
    channels: int, height: int, width: int, *, device=None, dtype=torch.float32
) -> torch.Tensor:
    """(channels, height, width) sin/cos code: first half encodes x, second half y.

    Within each half, even channels hold sin and odd ones cos of the position times
    frequencies 1e4^(-2i/half), as in the original's `utils.positionalencoding2d`.
    """
    if channels % 4:
        raise ValueError(f"positional encoding needs channels divisible by 4, got {channels}")
    half = channels // 2
    freqs = torch.exp(
        torch.arange(0, half, 2, device=device, dtype=torch.float64) * (-math.log(1e4) / half)
    )
    xs = torch.arange(width, device=device, dtype=torch.float64)[:, None] * freqs  # (W, half/2)
    ys = torch.arange(height, device=device, dtype=torch.float64)[:, None] * freqs  # (H, half/2)
    code = torch.empty(channels, height, width, device=device, dtype=torch.float64)
    code[0:half:2] = torch.sin(xs).T[:, None, :]
    code[1:half:2] = torch.cos(xs).T[:, None, :]
    code[half::2] = torch.sin(ys).T[:, :, None]
    code[half + 1 :: 2] = torch.cos(ys).T[:, :, None]
    return code.to(dtype)


def build_parallel_flow(channels: int, cond_channels: int, blocks: int, clamp: float) -> Ff.SequenceINN:
    """`blocks` AllInOneBlocks (affine coupling, soft-plus global affine, hard permutation)
    conditioned on the positional encoding. Spatial dims are given as 1x1 because the
    blocks are convolutional: any map size runs through them."""
    flow = Ff.SequenceINN(channels, 1, 1)
    for _ in range(blocks):
        flow.append(
            Fm.AllInOneBlock,
            cond=0,
            cond_shape=(cond_channels, 1, 1),
            subnet_constructor=ConvLayerNormSubnet,
            affine_clamping=clamp,
            global_affine_type="SOFTPLUS",
        )
    return flow
