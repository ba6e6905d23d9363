"""CS-Flow's multi-scale extractor: one frozen EfficientNet on three copies of the image.

CS-Flow (marco-rudolph/cs-flow model.py:58-65) resizes the normalised image to 1, 1/2 and
1/4 of its size with ``F.interpolate`` (default: nearest) and runs EfficientNet-B5 up to
block 35 on each. One extractor that returns the three maps fits the feature cache (one
extractor per dataset, category, set-up and size) better than three extractors would: one
cache folder, one spec, and the three maps always come from the same weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uadflows.backbones import weights as W
from uadflows.backbones.base import ExtractorSpec
from uadflows.backbones.setups import PyramidSetup
from uadflows.backbones.timm_backbones import FrozenExtractor


class PyramidExtractor(FrozenExtractor):
    """timm EfficientNet stem + the first ``setup.stages`` stages, run at each scale ->
    [(B, C, H/stride, W/stride), (B, C, H/2/stride, ...), ...]."""

    def __init__(self, spec: ExtractorSpec, model: nn.Module, setup: PyramidSetup):
        super().__init__(spec)
        if setup.stages > len(model.blocks):
            raise ValueError(f"backbone {spec.name}: asks for {setup.stages} stages, {setup.model} has {len(model.blocks)}")
        self.setup = setup
        self.conv_stem = model.conv_stem
        self.bn1 = model.bn1  # BatchNormAct2d: batch norm + SiLU, as the original's _bn0 + _swish
        self.blocks = nn.Sequential(*list(model.blocks)[: setup.stages])  # later stages dropped
        self.freeze()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.normalise(images)
        height, width = self.spec.image_size
        out = []
        for s in range(self.setup.n_scales):
            # Nearest resizing commutes with the per-channel normalisation, so resizing the
            # normalised image (as the original) or the raw one gives the same input.
            xs = x if s == 0 else F.interpolate(x, size=(height >> s, width >> s), mode=self.setup.resize)
            out.append(self.blocks(self.bn1(self.conv_stem(xs))))
        return out


def build_pyramid(spec: ExtractorSpec, source: W.WeightsSource, setup: PyramidSetup) -> PyramidExtractor:
    return PyramidExtractor(spec, W.build_timm(source), setup)
