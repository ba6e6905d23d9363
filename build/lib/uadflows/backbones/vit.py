"""Frozen transformers: patch tokens after the first N blocks and the final norm.

We run timm's modules ourselves (patch embedding, position embedding, blocks, norm) so
the features can come from an intermediate block; blocks past N and the heads are
dropped after loading, which saves memory (CaiT-M48 keeps 41 of its 48 + 2 blocks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uadflows.backbones import weights as W
from uadflows.backbones.base import Extractor, ExtractorSpec
from uadflows.backbones.setups import VitSetup
from uadflows.backbones.timm_backbones import FrozenExtractor


class VitExtractor(FrozenExtractor):
    """One timm CaiT / DeiT(-distilled) set-up -> [(B, dim, H/16, W/16)]."""

    def __init__(self, spec: ExtractorSpec, model: nn.Module, setup: VitSetup):
        super().__init__(spec)
        depth = len(model.blocks)
        if setup.blocks > depth:
            raise ValueError(f"backbone {spec.name}: asks for {setup.blocks} blocks, the model has {depth}")
        if getattr(model, "no_embed_class", False):
            raise ValueError(f"backbone {spec.name}: position embeddings without prefix tokens are not supported")
        self.patch_embed = model.patch_embed
        self.pos_embed = model.pos_embed
        self.pos_drop = model.pos_drop
        missing = [n for n in setup.prefix_tokens if getattr(model, n, None) is None]
        if missing:
            raise ValueError(f"backbone {spec.name}: the timm model has no {', '.join(missing)}")
        # CaiT has a class token too, but only its class-attention blocks (dropped) see it.
        self.prefix_tokens = nn.ParameterList([getattr(model, n) for n in setup.prefix_tokens])
        self.blocks = nn.Sequential(*list(model.blocks)[: setup.blocks])
        self.norm = model.norm
        self.freeze()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(self.normalise(images))  # (B, N, C)
        batch = x.shape[0]
        n_prefix = len(self.prefix_tokens)
        if n_prefix:
            x = torch.cat([t.expand(batch, -1, -1) for t in self.prefix_tokens] + [x], dim=1)
        x = self.pos_drop(x + self.pos_embed)
        x = self.norm(self.blocks(x))[:, n_prefix:]
        (h, w) = self.spec.shapes[0]
        return [x.transpose(1, 2).reshape(batch, -1, h, w)]


class MultiScaleExtractor(Extractor):
    """Several ViT extractors on one image, each fed a bicubic resize to its own size
    (``align_corners=True`` as U-Flow). Outputs in part order."""

    def __init__(self, spec: ExtractorSpec, parts: list[VitExtractor]):
        super().__init__()
        self.spec = spec
        self.parts = nn.ModuleList(parts)
        self.eval()

    def train(self, mode: bool = True) -> "MultiScaleExtractor":
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if images.ndim != 4 or tuple(images.shape[-2:]) != tuple(self.spec.image_size):
            raise ValueError(
                f"backbone {self.spec.name}: expected images (B, 3, {self.spec.image_size[0]}, "
                f"{self.spec.image_size[1]}), got {tuple(images.shape)}"
            )
        out: list[torch.Tensor] = []
        for part in self.parts:
            size = tuple(part.spec.image_size)
            # Resizing before normalising equals U-Flow's resize of the normalised image:
            # bicubic weights sum to one, so a per-channel affine map commutes with it.
            x = images if size == tuple(images.shape[-2:]) else F.interpolate(images, size=size, mode="bicubic", align_corners=True)
            out.extend(part(x))
        return out


def build_vit(spec: ExtractorSpec, source: W.WeightsSource, setup: VitSetup) -> VitExtractor:
    model = W.build_timm(source)
    return VitExtractor(spec, model, setup)
