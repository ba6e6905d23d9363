"""CS-Flow (Rudolph et al., WACV 2022, arXiv 2110.02855) on cached multi-scale features."""

from __future__ import annotations

from dataclasses import replace

import torch

from uadflows.backbones.base import Extractor
from uadflows.methods import register
from uadflows.methods.base import FlowMethod, FlowOutput, TrainSetup
from uadflows.methods.csflow.anomaly_map import csflow_anomaly_maps
from uadflows.methods.csflow.config import CSFlowConfig
from uadflows.methods.csflow.coupling import CrossScaleFlow


@register("csflow")
class CSFlow(FlowMethod):
    """The extractor's maps of one image at several scales (same channels, each half the
    size of the previous one: the ``cs_effnet_*`` set-ups) -> the cross-scale flow -> one
    latent per scale of the same shape. ``log_jac[s]`` (B,) is the log-det of the channels
    of scale s summed over the blocks; their sum is the flow's log-determinant.
    """

    label = "CS-Flow"
    config_class = CSFlowConfig
    default_backbone = "cs_effnet_b5"
    default_image_size = 768  # the recipe's (CSFlowConfig.image_size)

    def __init__(self, backbone: Extractor, config: CSFlowConfig | None = None):
        super().__init__(backbone)
        config = config or CSFlowConfig()
        spec = backbone.spec
        channels, shapes = [int(c) for c in spec.channels], [tuple(s) for s in spec.shapes]
        where = f"csflow: extractor {spec.name!r} gives channels {channels}, shapes {shapes}"
        if len(channels) < 2 or len(set(channels)) != 1:
            raise ValueError(f"{where}; it needs >= 2 scales of equal channels (a cs_effnet_* set-up)")
        for (h, w), (hc, wc) in zip(shapes[:-1], shapes[1:]):
            if (h, w) != (2 * hc, 2 * wc):
                raise ValueError(f"{where}; each scale must be half the size of the previous one")
        if channels[0] < 2:
            raise ValueError(f"{where}; the coupling needs >= 2 channels")
        self.config = replace(config, image_size=tuple(spec.image_size))
        self.shapes = [(c, h, w) for c, (h, w) in zip(channels, shapes)]
        self.flow = CrossScaleFlow(
            len(channels), channels[0], config.hidden_channels, config.kernel_sizes, config.clamp,
            config.leaky_slope, config.use_gamma,
        )

    def _check(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if not isinstance(features, (list, tuple)) or len(features) != len(self.shapes):
            got = len(features) if isinstance(features, (list, tuple)) else type(features).__name__
            raise ValueError(f"csflow: expected a list of {len(self.shapes)} feature maps, got {got}")
        for s, (f, shape) in enumerate(zip(features, self.shapes)):
            if f.dim() != 4 or tuple(f.shape[1:]) != shape:
                raise ValueError(
                    f"csflow: feature map {s} has shape {tuple(f.shape)}; expected (B, {shape[0]}, "
                    f"{shape[1]}, {shape[2]}) as extractor {self.backbone.spec.name!r} gives"
                )
        return list(features)

    def forward(self, features: list[torch.Tensor], with_log_jac: bool = True) -> FlowOutput:
        z, log_jac = self.flow(self._check(features))
        return FlowOutput(z=z, log_jac=log_jac if with_log_jac else None)

    def inverse(self, z: list[torch.Tensor]) -> list[torch.Tensor]:
        """Latents -> features (the exact inverse of ``forward``)."""
        return self.flow(self._check(z), rev=True)[0]

    def loss(self, out: FlowOutput) -> torch.Tensor:
        """The official loss (cs-flow utils.py:26-29): the batch mean of
        ``0.5 ||z||^2 - log det`` over all scales, divided by the number of latent dimensions."""
        if out.log_jac is None:
            raise ValueError("csflow.loss needs log-determinants: call forward(..., with_log_jac=True)")
        flat = torch.cat([z.float().flatten(1) for z in out.z], dim=1)
        nll = 0.5 * flat.pow(2).sum(1) - sum(out.log_jac)
        return nll.mean() / flat.shape[1]

    def anomaly_maps(self, out: FlowOutput, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        return csflow_anomaly_maps(out.z, tuple(size))

    @classmethod
    def from_params(cls, extractor: Extractor, **params) -> "CSFlow":
        return cls(extractor, CSFlowConfig.from_kwargs(**params))

    def train_setup(self, epochs: int, steps_per_epoch: int, lr: float | None = None) -> TrainSetup:
        """Adam (lr 2e-4, eps 1e-4, weight decay 1e-5; cs-flow train.py:12), no schedule,
        gradient norm clipped at 1 (train.py:43). ``lr`` None: the recipe's."""
        optimizer = torch.optim.Adam(
            self.trainable_parameters(), lr=lr or self.config.lr, eps=self.config.adam_eps,
            weight_decay=self.config.weight_decay,
        )
        return TrainSetup(optimizer=optimizer, grad_clip=self.config.grad_clip)
