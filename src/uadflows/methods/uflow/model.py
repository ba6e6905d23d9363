"""U-Flow (Tailanian et al. 2022, arXiv 2211.12353): a U-shaped normalizing flow.

Scales are numbered fine (0) to coarse (S-1); each is half the size of the previous one.
Starting at the coarsest scale, a stage of ``flow_steps`` FrEIA ``AllInOneBlock`` steps
(kernels alternating 3x3 / 1x1, subnet hidden width = ratio x input channels, clamp 2.0, hard
permutations) transforms the volume; its channels are then split: the first ``V // 8 * 4``
(about half, a multiple of 4) go up through an invertible i-RevNet pixel shuffle (C/4
channels at twice the size, log-det 0), the rest are that scale's latent z. The upsampled
part is concatenated after the finer features and the next stage runs, down to scale 0,
whose whole output is z_0. With MS-CaiT (768@28, 384@14): z_1 = 192@14, z_0 = 816@28.
No channel matching is needed: the concatenation is along channels, so any C >= 8 at the
coarser scales works (the split sends ``V // 8 * 4 >= 4`` channels up).

``log_jac[s]`` is the log-determinant of the stage run at scale s (split, upsampling and
concatenation are volume preserving), so ``sum(log_jac)`` is the flow's total log-det.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from FrEIA.modules import AllInOneBlock, IRevNetUpsampling
from torch import nn

from uadflows.backbones.base import Extractor
from uadflows.methods import register
from uadflows.methods.base import FlowMethod, FlowOutput, TrainSetup
from uadflows.methods.layernorm import PreFlowLayerNorm
from uadflows.methods.uflow.config import LABEL, UFlowConfig, image_size_pair
from uadflows.methods.uflow.nfa import log_nfa_map


def _conv_subnet(kernel_size: int, hidden_ratio: float) -> Callable[[int, int], nn.Module]:
    def build(channels_in: int, channels_out: int) -> nn.Module:
        hidden = max(1, int(channels_in * hidden_ratio))
        return nn.Sequential(
            nn.Conv2d(channels_in, hidden, kernel_size, padding="same"),
            nn.ReLU(),
            nn.Conv2d(hidden, channels_out, kernel_size, padding="same"),
        )

    return build


class FlowStage(nn.Module):
    """``steps`` AllInOneBlocks at one resolution; returns the stage's log-det per sample."""

    def __init__(self, shape: tuple[int, int, int], steps: int, clamp: float, hidden_ratio: float):
        super().__init__()
        self.blocks = nn.ModuleList(
            AllInOneBlock(
                [shape],
                subnet_constructor=_conv_subnet(3 if step % 2 == 0 else 1, hidden_ratio),
                affine_clamping=clamp,
                permute_soft=False,
            )
            for step in range(steps)
        )

    def forward(self, x: torch.Tensor, rev: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        log_jac = x.new_zeros(x.shape[0])
        for block in reversed(self.blocks) if rev else self.blocks:
            (x,), block_jac = block([x], rev=rev)
            log_jac = log_jac + block_jac
        return x, log_jac


class UShapedFlow(nn.Module):
    """The invertible U: features (fine -> coarse) <-> latents (one per scale, same order)."""

    def __init__(
        self,
        shapes: Sequence[tuple[int, int, int]],
        steps: int = 4,
        clamp: float = 2.0,
        hidden_ratio: float = 1.0,
    ):
        super().__init__()
        shapes = [tuple(int(v) for v in s) for s in shapes]
        if len(shapes) < 2:
            raise ValueError(f"U-shaped flow needs at least 2 scales, got shapes {shapes}")
        for (_, h, w), (_, hc, wc) in zip(shapes[:-1], shapes[1:]):
            if (h, w) != (2 * hc, 2 * wc):
                raise ValueError(
                    f"U-shaped flow: spatial sizes must halve from fine to coarse, got {shapes} "
                    "as (C, H, W) per scale"
                )
        self.input_shapes = shapes
        n = len(shapes)
        stages: list[FlowStage | None] = [None] * n
        self.up_channels = [0] * n  # channels sent up from scale s (s >= 1)
        self.output_shapes: list[tuple[int, int, int]] = [shapes[0]] * n
        volume = shapes[-1][0]
        for s in range(n - 1, 0, -1):
            c, h, w = shapes[s]
            up = volume // 8 * 4
            if up < 4:
                raise ValueError(
                    f"U-shaped flow: scale {s} carries {volume} channels; at least 8 are needed "
                    "to send 4 up through the pixel shuffle"
                )
            stages[s] = FlowStage((volume, h, w), steps, clamp, hidden_ratio)
            self.up_channels[s] = up
            self.output_shapes[s] = (volume - up, h, w)
            volume = shapes[s - 1][0] + up // 4
        c0, h0, w0 = shapes[0]
        stages[0] = FlowStage((volume, h0, w0), steps, clamp, hidden_ratio)
        self.output_shapes[0] = (volume, h0, w0)
        self.stages = nn.ModuleList(stages)
        self.upsamplers = nn.ModuleList(
            nn.Identity() if s == 0 else IRevNetUpsampling([(self.up_channels[s], *shapes[s][1:])])
            for s in range(n)
        )

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        n = len(self.input_shapes)
        z: list[torch.Tensor] = [torch.empty(0)] * n
        log_jac: list[torch.Tensor] = [torch.empty(0)] * n
        x = features[-1]
        for s in range(n - 1, 0, -1):
            x, log_jac[s] = self.stages[s](x)
            up, z[s] = torch.split(x, [self.up_channels[s], x.shape[1] - self.up_channels[s]], dim=1)
            (up,), _ = self.upsamplers[s]([up])
            x = torch.cat([features[s - 1], up], dim=1)
        z[0], log_jac[0] = self.stages[0](x)
        return z, log_jac

    def inverse(self, z: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Latents -> features (the exact inverse of ``forward``)."""
        n = len(self.input_shapes)
        features: list[torch.Tensor] = [torch.empty(0)] * n
        x, _ = self.stages[0](z[0], rev=True)
        for s in range(1, n):
            c_fine = self.input_shapes[s - 1][0]
            features[s - 1], up = x[:, :c_fine], x[:, c_fine:]
            (up,), _ = self.upsamplers[s]([up], rev=True)
            x, _ = self.stages[s](torch.cat([up, z[s]], dim=1), rev=True)
        features[n - 1] = x
        return features


def uses_layernorm(backbone_name: str) -> bool:
    """The official rule: CNN features get a trainable LayerNorm, transformer features
    (already normalised by the blocks' final norm) none."""
    from uadflows.backbones.setups import kind_of

    try:
        return kind_of(backbone_name) == "cnn"
    except KeyError:  # a custom extractor: treated as a CNN, like FastFlow
        return True


@register("uflow")
class UFlow(FlowMethod):
    """U-Flow on a frozen extractor; ``self.config`` holds the recipe (a ``UFlowConfig``).

    ``norms``: the per-scale trainable ``LayerNorm([C, H, W])`` (mtailanian/uflow
    src/feature_extraction.py:48-53, applied in its forward, :58-61), or None; a
    ``PreFlowLayerNorm`` in ``config.norm``'s mode (its state-dict keys are LayerNorm's)."""

    label = LABEL
    config_class = UFlowConfig
    default_backbone = "ms_cait"
    default_image_size = 448  # the recipe's (UFlowConfig.image_size)

    def __init__(self, backbone: Extractor, config: UFlowConfig | None = None):
        super().__init__(backbone)
        self.config = config if config is not None else UFlowConfig()
        spec = backbone.spec
        if image_size_pair(self.config.image_size) != tuple(spec.image_size):
            raise ValueError(
                f"uflow: config.image_size={self.config.image_size} but extractor {spec.name!r} "
                f"takes {spec.image_size[0]}x{spec.image_size[1]} images"
            )
        n_outputs = len(spec.channels)
        n_scales = n_outputs if self.config.n_scales is None else self.config.n_scales
        if n_scales > n_outputs:
            raise ValueError(
                f"uflow: n_scales={n_scales} but extractor {spec.name!r} has only "
                f"{n_outputs} outputs (channels {spec.channels})"
            )
        self.first_scale = n_outputs - n_scales
        shapes = [(c, h, w) for c, (h, w) in zip(spec.channels, spec.shapes)][self.first_scale :]
        layernorm = uses_layernorm(spec.name) if self.config.layernorm is None else self.config.layernorm
        if not layernorm and self.config.norm != "faithful":
            raise ValueError(
                f"uflow: norm {self.config.norm!r} needs a LayerNorm, but extractor {spec.name!r} gets none "
                "(layernorm: null means none on transformer features such as MS-CaiT)"
            )
        self.norms = (
            nn.ModuleList(PreFlowLayerNorm(shape, self.config.norm) for shape in shapes) if layernorm else None
        )
        try:
            self.flow = UShapedFlow(
                shapes,
                steps=self.config.flow_steps,
                clamp=self.config.affine_clamp,
                hidden_ratio=self.config.subnet_hidden_ratio,
            )
        except ValueError as err:
            raise ValueError(f"uflow on extractor {spec.name!r}: {err}") from err

    def _select(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        spec = self.backbone.spec
        if len(features) != len(spec.channels):
            raise ValueError(
                f"uflow: expected {len(spec.channels)} feature maps from extractor "
                f"{spec.name!r}, got {len(features)}"
            )
        selected = list(features[self.first_scale :])
        for s, (f, shape) in enumerate(zip(selected, self.flow.input_shapes)):
            if tuple(f.shape[1:]) != shape:
                raise ValueError(
                    f"uflow: feature map {self.first_scale + s} has shape {tuple(f.shape[1:])}, "
                    f"expected (C, H, W) = {shape} from extractor {spec.name!r}"
                )
        if self.norms is not None:
            selected = [norm(f) for norm, f in zip(self.norms, selected)]
        return selected

    def forward(self, features: list[torch.Tensor], with_log_jac: bool = True) -> FlowOutput:
        z, log_jac = self.flow(self._select(features))
        if not with_log_jac:
            return FlowOutput(z=z, log_jac=None)
        if self.norms is not None:  # ``bounded``: scale s's sum log|w| joins that scale's log-det
            norm_log_dets = [norm.log_det() for norm in self.norms]
            log_jac = [lj if nld is None else lj + nld for lj, nld in zip(log_jac, norm_log_dets)]
        return FlowOutput(z=z, log_jac=log_jac)

    def norm_scales(self) -> list[float] | None:
        """Mean affine weight of each scale's pre-flow LayerNorm (training health); None
        without one or without affine."""
        if self.norms is None or self.config.norm == "no-affine":
            return None
        return [n.scale() for n in self.norms]

    def loss(self, out: FlowOutput) -> torch.Tensor:
        """Mean over the batch of sum_s (0.5 ||z_s||^2 - log_jac_s): the official
        normalisation (a sum over every latent dimension, not a per-dimension mean). With
        ``norm: bounded`` log_jac_s includes scale s's LayerNorm sum log|w|."""
        if out.log_jac is None:
            raise ValueError("uflow.loss needs log-determinants: call forward(..., with_log_jac=True)")
        per_sample = sum(0.5 * zs.pow(2).flatten(1).sum(1) - lj for zs, lj in zip(out.z, out.log_jac))
        return per_sample.mean()

    def anomaly_maps(self, out: FlowOutput, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """``map``: 1 - mean over scales of the bilinearly upsampled exp(-0.5 mean_c z^2);
        ``score``: max of ``map``; ``log_nfa``: -log10 NFA (detection where > 0, i.e. NFA < 1)."""
        size = (int(size[0]), int(size[1]))
        probabilities = [
            F.interpolate(
                torch.exp(-0.5 * zs.float().pow(2).mean(1, keepdim=True)),
                size=size,
                mode="bilinear",
                align_corners=False,
            )
            for zs in out.z
        ]
        anomaly = 1.0 - torch.stack(probabilities, 0).mean(0)[:, 0]
        maps = {"map": anomaly, "score": anomaly.flatten(1).amax(1)}
        if self.config.compute_nfa:
            maps["log_nfa"] = log_nfa_map(out.z, size, tail=self.config.nfa_tail).to(anomaly.device)
        return maps

    @classmethod
    def from_params(cls, extractor: Extractor, **params) -> "UFlow":
        """``params``: UFlowConfig fields; the image size is the extractor's."""
        h, w = extractor.spec.image_size
        return cls(extractor, UFlowConfig.from_dict({**params, "image_size": h if h == w else (h, w)}))

    def train_setup(self, epochs: int, steps_per_epoch: int, lr: float | None = None) -> TrainSetup:
        """Adam (lr, weight decay 1e-5) and LinearLR 1.0 -> 0.4, stepped once per epoch so the
        last epoch runs at 0.4 x lr."""
        if epochs < 1:
            raise ValueError(f"uflow.train_setup: epochs must be >= 1, got {epochs}")
        optimizer = torch.optim.Adam(
            self.trainable_parameters(), lr=lr or self.config.lr, weight_decay=self.config.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.LinearLR(
            optimizer,
            start_factor=1.0,
            end_factor=self.config.lr_end_factor,
            total_iters=max(epochs - 1, 1),
        )
        return TrainSetup(optimizer=optimizer, scheduler=scheduler, scheduler_interval="epoch")
