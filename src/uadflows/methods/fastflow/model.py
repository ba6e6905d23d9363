"""FastFlow: one 2-D flow per feature scale, each a chain of FrEIA ``AllInOneBlock`` steps
(affine coupling with a Conv-ReLU-Conv subnet, soft clamp, hard random permutation, global
affine); ResNet-like backbones get a trainable ``LayerNorm([C, H, W])`` per scale first,
as the reference reproduction gathierry/FastFlow does. See docs/methods/fastflow.md.
"""

from __future__ import annotations

import math
from typing import Any

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import torch
from torch import nn

from uadflows.backbones.base import Extractor, ExtractorSpec
from uadflows.methods import register
from uadflows.methods.base import FlowMethod, FlowOutput, TrainSetup
from uadflows.methods.fastflow.anomaly_map import fastflow_anomaly_maps
from uadflows.methods.fastflow.config import LABEL, FastFlowConfig
from uadflows.methods.fastflow.lean import LeanAllInOneBlock
from uadflows.methods.layernorm import PreFlowLayerNorm


def _subnet(kernel_size: int, config: FastFlowConfig):
    def build(channels_in: int, channels_out: int) -> nn.Module:
        hidden = config.hidden_width(channels_in)
        pad = kernel_size // 2
        return nn.Sequential(
            nn.Conv2d(channels_in, hidden, kernel_size, padding=pad),
            nn.ReLU(),
            nn.Conv2d(hidden, channels_out, kernel_size, padding=pad),
        )

    return build


def build_flow(chw: tuple[int, int, int], config: FastFlowConfig) -> Ff.SequenceINN:
    """One scale's flow: ``flow_steps`` AllInOneBlocks on (C, H, W) maps."""
    flow = Ff.SequenceINN(*chw)
    block = LeanAllInOneBlock if config.lean_permutation else Fm.AllInOneBlock
    for step in range(config.flow_steps):
        flow.append(
            block,
            subnet_constructor=_subnet(config.kernel_size(step), config),
            affine_clamping=config.clamp,
            permute_soft=False,
        )
    return flow


@register("fastflow")
class FastFlow(FlowMethod):
    label = LABEL
    config_class = FastFlowConfig

    def __init__(self, backbone: Extractor, config: FastFlowConfig):
        super().__init__(backbone)
        self.config = config
        spec: ExtractorSpec = backbone.spec
        self.chw = [(c, h, w) for c, (h, w) in zip(spec.channels, spec.shapes)]
        self.norms = (nn.ModuleList([PreFlowLayerNorm(chw, config.norm) for chw in self.chw])
                      if config.layernorm else None)
        self.flows = nn.ModuleList([build_flow(chw, config) for chw in self.chw])

    def prepare(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Check cached features against the spec, then the per-scale LayerNorm."""
        if len(features) != len(self.chw):
            raise ValueError(f"fastflow: got {len(features)} feature scales, backbone {self.backbone.spec.name} gives {len(self.chw)}")
        dtype = self.flows[0].module_list[0].global_scale.dtype
        out = []
        for i, (f, chw) in enumerate(zip(features, self.chw)):
            if tuple(f.shape[1:]) != chw:
                raise ValueError(f"fastflow: feature scale {i} is {tuple(f.shape[1:])}, expected (C, H, W) = {chw}")
            f = f.to(dtype)
            out.append(self.norms[i](f) if self.norms is not None else f)
        return out

    def forward(self, features: list[torch.Tensor], with_log_jac: bool = True) -> FlowOutput:
        zs, log_jacs = [], []
        for i, (flow, x) in enumerate(zip(self.flows, self.prepare(features))):
            z, log_jac = flow(x, jac=with_log_jac)
            norm_log_det = self.norms[i].log_det() if self.norms is not None and with_log_jac else None
            zs.append(z)
            log_jacs.append(log_jac if norm_log_det is None else log_jac + norm_log_det)
        return FlowOutput(z=zs, log_jac=log_jacs if with_log_jac else None)

    @torch.no_grad()
    def inverse(self, z: list[torch.Tensor]) -> list[torch.Tensor]:
        """Latents -> the (LayerNorm-ed) features the flows saw."""
        return [flow(zi, rev=True)[0] for flow, zi in zip(self.flows, z)]

    @staticmethod
    def log_likelihood(out: FlowOutput) -> torch.Tensor:
        """log p(x) per sample (B,): sum over scales of log N(z; 0, I) + log|det J|."""
        if out.log_jac is None:
            raise ValueError("fastflow: log_likelihood needs log_jac (forward with with_log_jac=True)")
        total = 0.0
        for z, log_jac in zip(out.z, out.log_jac):
            dims = z[0].numel()
            total = total + (-0.5 * z.pow(2).flatten(1).sum(1) - 0.5 * dims * math.log(2 * math.pi) + log_jac)
        return total

    def loss(self, out: FlowOutput) -> torch.Tensor:
        """As gathierry/FastFlow: sum over scales of the batch mean of
        0.5 * ||z||^2 - log|det J| (no per-dimension normalisation; the constant dropped).
        With ``norm: bounded`` log|det J| includes the LayerNorm's sum log|w|."""
        if out.log_jac is None:
            raise ValueError("fastflow: loss needs log_jac (forward with with_log_jac=True)")
        return sum((0.5 * z.pow(2).flatten(1).sum(1) - lj).mean() for z, lj in zip(out.z, out.log_jac))

    def anomaly_maps(self, out: FlowOutput, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        return fastflow_anomaly_maps(out.z, size)

    def norm_scales(self) -> list[float] | None:
        """Mean affine weight of each scale's pre-flow LayerNorm (training health)."""
        if self.norms is None or self.config.norm == "no-affine":
            return None
        return [n.scale() for n in self.norms]

    def train_setup(self, epochs: int, steps_per_epoch: int, lr: float | None = None) -> TrainSetup:
        opt = torch.optim.Adam(self.trainable_parameters(), lr=lr or self.config.lr, weight_decay=self.config.weight_decay)
        return TrainSetup(optimizer=opt)

    @classmethod
    def from_params(cls, extractor: Extractor, variant: str = "paper", **params: Any) -> "FastFlow":
        """``params``: FastFlowConfig fields over the backbone's recipe (``for_backbone``)."""
        return cls(extractor, FastFlowConfig.for_backbone(extractor.spec.name, variant=variant, **params))


def parameter_counts(model: FastFlow) -> dict[str, int]:
    """trainable: flow subnets + global affine; layernorm: the per-scale LayerNorms;
    fixed_permutation: FrEIA's permutation matrices (parameters without gradient)."""
    flows = [p for n, p in model.flows.named_parameters()]
    fixed = sum(p.numel() for p in flows if not p.requires_grad)
    trainable = sum(p.numel() for p in flows if p.requires_grad)
    layernorm = sum(p.numel() for p in model.norms.parameters()) if model.norms is not None else 0
    return {"trainable": trainable, "layernorm": layernorm, "fixed_permutation": fixed}
