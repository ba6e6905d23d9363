"""MSFlow (Zhou et al. 2023, arXiv 2308.15300) on cached backbone features."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from uadflows.backbones.base import Extractor
from uadflows.methods import register
from uadflows.methods.base import FlowMethod, FlowOutput, TrainSetup
from uadflows.methods.msflow.config import MSFlowConfig
from uadflows.methods.msflow.fusion import FusionFlow
from uadflows.methods.msflow.parallel import build_parallel_flow, positional_encoding_2d
from uadflows.methods.msflow.anomaly_map import msflow_anomaly_maps
from uadflows.methods.msflow.schedule import build_scheduler


@register("msflow")
class MSFlow(FlowMethod):
    """Raw stage features -> AvgPool2d(3, 2, 1) -> one conditional parallel flow per scale
    -> the fusion flow -> one latent per scale.

    ``forward`` returns ``FlowOutput(z, log_jac)`` with, per scale s, ``z[s]`` of shape
    (B, C_s, H_s/2, W_s/2) and ``log_jac[s]`` (B,) = log-det of scale s's parallel flow plus
    the fusion coupling's log-scales applied to scale s's channels. The sum over scales is
    the log-determinant of the whole flow (pooled features -> latents); the pooling itself
    is a fixed pre-processing step, outside the density.
    """

    label = "MSFlow"
    config_class = MSFlowConfig
    default_backbone = "wide_resnet50_2"
    default_image_size = 512  # the recipe's (MSFlowConfig.image_size)
    pro_map = "map_mul"  # the original computes PRO on the "mul" map, pixel AUROC on "add"

    def __init__(self, backbone: Extractor, config: MSFlowConfig | None = None):
        super().__init__(backbone)
        config = config or MSFlowConfig()
        spec = backbone.spec
        self.channels = [int(c) for c in spec.channels]
        if len(self.channels) != len(config.blocks_per_scale):
            raise ValueError(
                f"msflow: extractor {spec.name!r} gives {len(self.channels)} scales "
                f"(channels {self.channels}) but blocks_per_scale has "
                f"{len(config.blocks_per_scale)} entries {list(config.blocks_per_scale)}"
            )
        self.config = replace(config, image_size=tuple(spec.image_size))
        self.pool = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)
        self.parallel_flows = nn.ModuleList(
            build_parallel_flow(c, config.cond_channels, blocks, config.clamp)
            for c, blocks in zip(self.channels, config.blocks_per_scale)
        )
        self.fusion_flow = FusionFlow(self.channels, config.clamp)

    # ---- the flow ------------------------------------------------------------------
    def pool_features(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Check the cached raw stage maps against the extractor spec and pool them."""
        if not isinstance(features, (list, tuple)) or len(features) != len(self.channels):
            got = len(features) if isinstance(features, (list, tuple)) else type(features).__name__
            raise ValueError(f"msflow: expected a list of {len(self.channels)} feature maps, got {got}")
        for i, (f, c) in enumerate(zip(features, self.channels)):
            if f.dim() != 4 or f.shape[1] != c:
                raise ValueError(
                    f"msflow: feature map {i} has shape {tuple(f.shape)}; expected (B, {c}, H, W) "
                    f"as extractor {self.backbone.spec.name!r} gives"
                )
        return [self.pool(f) for f in features]

    def _conditions(self, x: torch.Tensor) -> torch.Tensor:
        _, _, height, width = x.shape
        code = positional_encoding_2d(
            self.config.cond_channels, height, width, device=x.device, dtype=x.dtype
        )
        return code.expand(x.shape[0], -1, -1, -1)

    def transform(self, pooled: list[torch.Tensor], with_log_jac: bool = True) -> FlowOutput:
        """Pooled features -> latents (parallel flows, then fusion flow)."""
        zs, parallel_jacs = [], []
        for x, flow in zip(pooled, self.parallel_flows):
            z, jac = flow(x, c=[self._conditions(x)], jac=with_log_jac)
            zs.append(z)
            parallel_jacs.append(jac)
        zs, fusion_jacs = self.fusion_flow(zs)
        if not with_log_jac:
            return FlowOutput(z=zs)
        return FlowOutput(z=zs, log_jac=[p + f for p, f in zip(parallel_jacs, fusion_jacs)])

    def inverse(self, z: list[torch.Tensor]) -> list[torch.Tensor]:
        """Latents -> pooled features (the inverse of ``transform``)."""
        if len(z) != len(self.channels):
            raise ValueError(f"msflow: expected {len(self.channels)} latents, got {len(z)}")
        xs, _ = self.fusion_flow(list(z), rev=True)
        return [
            flow(x, c=[self._conditions(x)], rev=True, jac=False)[0]
            for x, flow in zip(xs, self.parallel_flows)
        ]

    def forward(self, features: list[torch.Tensor], with_log_jac: bool = True) -> FlowOutput:
        pooled = self.pool_features(features)
        # The original trains under float16 autocast and scores in float32.
        use_amp = self.config.amp and self.training and pooled[0].is_cuda
        with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
            out = self.transform(pooled, with_log_jac)
        if use_amp:
            out.z = [z.float() for z in out.z]
            out.log_jac = None if out.log_jac is None else [j.float() for j in out.log_jac]
        return out

    # ---- training and scoring ------------------------------------------------------
    def loss(self, out: FlowOutput) -> torch.Tensor:
        """Batch mean of each image's negative log-likelihood, summed over every latent
        dimension (0.5 * sum z^2 - log-det, constants dropped), as the original: it is
        not divided by the number of dimensions, which matters for the clip at norm 2."""
        if out.log_jac is None:
            raise ValueError("msflow.loss needs log-determinants: call forward(..., with_log_jac=True)")
        nll = sum(0.5 * z.float().pow(2).sum(dim=(1, 2, 3)) for z in out.z) - sum(out.log_jac)
        return nll.mean()

    def anomaly_maps(self, out: FlowOutput, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        return msflow_anomaly_maps(out.z, tuple(size), self.config.top_k)

    @classmethod
    def from_params(cls, extractor: Extractor, **params) -> "MSFlow":
        return cls(extractor, MSFlowConfig.from_kwargs(**params))

    def train_setup(self, epochs: int, steps_per_epoch: int, lr: float | None = None) -> TrainSetup:
        """Adam, warm-up + step decay stepped once per epoch (see ``schedule``), clip 2."""
        if steps_per_epoch < 1:
            raise ValueError(f"msflow.train_setup: steps_per_epoch must be >= 1, got {steps_per_epoch}")
        optimizer = torch.optim.Adam(self.trainable_parameters(), lr=lr or self.config.lr)
        return TrainSetup(
            optimizer=optimizer,
            scheduler=build_scheduler(optimizer, epochs, self.config),
            scheduler_interval="epoch",
            grad_clip=self.config.grad_clip,
        )
