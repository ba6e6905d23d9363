"""CFlow-AD (Gudovskiy et al., WACV 2022; gudovskiy/cflow-ad) on cached backbone features."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import torch
import torch.nn.functional as F
from torch import nn

from uadflows.backbones.base import Extractor
from uadflows.methods import register
from uadflows.methods.base import FlowMethod, FlowOutput, TrainSetup
from uadflows.methods.cflow.anomaly_map import cflow_anomaly_maps, log_prob_per_dim
from uadflows.methods.cflow.config import CFlowConfig
from uadflows.methods.cflow.schedule import build_scheduler
from uadflows.methods.msflow.parallel import positional_encoding_2d  # = the original's model.py:11-30


def subnet_fc(dims_in: int, dims_out: int) -> nn.Sequential:
    """Coupling subnet Linear(d, 2d) - ReLU - Linear(2d, out) (model.py:33-34)."""
    return nn.Sequential(nn.Linear(dims_in, 2 * dims_in), nn.ReLU(), nn.Linear(2 * dims_in, dims_out))


def build_decoder(channels: int, config: CFlowConfig) -> Ff.SequenceINN:
    """One layer's conditional decoder (model.py:46-53): AllInOneBlocks on single feature
    vectors, conditioned on the positional code, soft-plus global affine, soft (random
    orthogonal) permutation."""
    decoder = Ff.SequenceINN(channels)
    for _ in range(config.coupling_blocks):
        decoder.append(Fm.AllInOneBlock, cond=0, cond_shape=(config.cond_channels,),
                       subnet_constructor=subnet_fc, affine_clamping=config.clamp,
                       global_affine_type="SOFTPLUS", permute_soft=True)
    return decoder


@register("cflow")
class CFlow(FlowMethod):
    """Frozen encoder layers -> one conditional decoder per layer, applied to every
    position's feature vector ("fiber") with the 2-D positional code of that position.

    ``forward`` returns ``FlowOutput`` with per layer ``z[l]`` (B, C_l, H_l, W_l),
    ``log_jac[l]`` (B,) (the sum of the per-position log-dets) and
    ``extras["log_prob"][l]`` (B, H_l, W_l), the per-dimension log-likelihood of every
    position, which the map and the loss use. The log-dets are always computed: the
    official map needs them.
    """

    label = "CFlow"
    config_class = CFlowConfig
    default_backbone = "wide_resnet50_2_l234"  # the official encoder: WRN50-2 layer2/3/4
    default_image_size = 256  # the recipe's (CFlowConfig.image_size)
    steps_in_batch = True  # ``train_batch``: one optimiser step per fiber batch

    def __init__(self, backbone: Extractor, config: CFlowConfig | None = None):
        super().__init__(backbone)
        config = config or CFlowConfig()
        self.config = replace(config, image_size=tuple(backbone.spec.image_size))
        self.channels = [int(c) for c in backbone.spec.channels]
        self.decoders = nn.ModuleList(build_decoder(c, config) for c in self.channels)

    # ---- the flow ------------------------------------------------------------------
    def _check(self, features: list[torch.Tensor]) -> None:
        if not isinstance(features, (list, tuple)) or len(features) != len(self.channels):
            got = len(features) if isinstance(features, (list, tuple)) else type(features).__name__
            raise ValueError(f"cflow: expected a list of {len(self.channels)} feature maps, got {got}")
        for i, (f, c) in enumerate(zip(features, self.channels)):
            if f.dim() != 4 or f.shape[1] != c:
                raise ValueError(f"cflow: feature map {i} has shape {tuple(f.shape)}; expected (B, {c}, H, W) "
                                 f"as extractor {self.backbone.spec.name!r} gives")

    def fibers(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> rows (B*H*W, C) and their positional codes (B*H*W, P), in the
        original's order (train.py:59-61)."""
        b, c, h, w = feature.shape
        code = positional_encoding_2d(self.config.cond_channels, h, w, device=feature.device, dtype=feature.dtype)
        cond = code.reshape(self.config.cond_channels, h * w).T.repeat(b, 1)
        return feature.permute(0, 2, 3, 1).reshape(-1, c), cond

    def forward(self, features: list[torch.Tensor], with_log_jac: bool = True) -> FlowOutput:
        self._check(features)
        zs, jacs, log_probs = [], [], []
        for feature, decoder in zip(features, self.decoders):
            b, c, h, w = feature.shape
            rows, cond = self.fibers(feature)
            z, jac = decoder(rows, c=[cond])
            zs.append(z.reshape(b, h, w, c).permute(0, 3, 1, 2))
            jacs.append(jac.reshape(b, -1).sum(dim=1))
            log_probs.append(log_prob_per_dim(z, jac).reshape(b, h, w))
        return FlowOutput(z=zs, log_jac=jacs, extras={"log_prob": log_probs})

    def inverse(self, z: list[torch.Tensor]) -> list[torch.Tensor]:
        """Latents (B, C_l, H_l, W_l) -> features (the inverse of ``forward``)."""
        out = []
        for latent, decoder in zip(z, self.decoders):
            b, c, h, w = latent.shape
            rows, cond = self.fibers(latent)
            x, _ = decoder(rows, c=[cond], rev=True, jac=False)
            out.append(x.reshape(b, h, w, c).permute(0, 3, 1, 2))
        return out

    # ---- training ------------------------------------------------------------------
    def loss(self, out: FlowOutput) -> torch.Tensor:
        """Mean over positions of -log sigmoid(log-likelihood per dimension) (train.py:78)."""
        return torch.cat([-F.logsigmoid(lp).flatten() for lp in out.extras["log_prob"]]).mean()

    @classmethod
    def from_params(cls, extractor: Extractor, **params: Any) -> "CFlow":
        return cls(extractor, CFlowConfig.from_kwargs(**params))

    def train_setup(self, epochs: int, steps_per_epoch: int, lr: float | None = None) -> TrainSetup:
        """One Adam over every decoder (train.py:268-272); the warm-up + cosine factor of
        ``lr`` (the job's, else the recipe's) is recomputed at every image batch
        (``schedule``), stepped by ``train_batch``."""
        optimizer = torch.optim.Adam(self.trainable_parameters(), lr=lr or self.config.lr)
        return TrainSetup(optimizer=optimizer, scheduler_interval="step",
                          scheduler=build_scheduler(optimizer, epochs, steps_per_epoch, self.config))

    def train_batch(self, features: list[torch.Tensor], setup: TrainSetup,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """The original's inner loop (train.py:47-83) for one batch of images: per layer,
        the batch's positions in a random order, cut into fiber batches of N (the rest
        dropped); one optimiser step per fiber batch. Returns the mean loss over the fibers.

        ``zero_grad(set_to_none=False)`` is the behaviour of the torch 1.x the original ran
        on: once a decoder has gradients, the fiber steps of the other layers still move it
        with Adam's momentum (torch >= 2 would skip it)."""
        self._check(features)
        total, count = torch.zeros(()), 0
        for layer, (feature, decoder) in enumerate(zip(features, self.decoders)):
            rows, cond = self.fibers(feature)
            n = self.config.fiber_batch
            if rows.shape[0] < n:
                raise ValueError(f"cflow: layer {layer} has {rows.shape[0]} positions per batch, fewer than "
                                 f"fiber_batch {n}; lower fiber_batch or raise batch_size")
            order = torch.randperm(rows.shape[0], generator=generator).to(rows.device)
            for f in range(rows.shape[0] // n):
                idx = order[f * n : (f + 1) * n]
                z, jac = decoder(rows[idx], c=[cond[idx]])
                loss = -F.logsigmoid(log_prob_per_dim(z, jac))
                setup.optimizer.zero_grad(set_to_none=False)
                loss.mean().backward()
                setup.optimizer.step()
                total += loss.detach().sum().cpu()
                count += n
                if not torch.isfinite(loss).all():
                    return loss.detach().mean()
        if setup.scheduler is not None:
            setup.scheduler.step()
        return total / count

    # ---- scoring -------------------------------------------------------------------
    def anomaly_maps(self, out: FlowOutput, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The official map and score with this batch as the set, plus each layer's
        log-likelihoods ``log_prob{l}``, from which ``finalize_maps`` recomputes both over
        the whole test set."""
        log_probs = [lp.float() for lp in out.extras["log_prob"]]
        maps = cflow_anomaly_maps(log_probs, tuple(size))
        maps.update({f"log_prob{l}": lp for l, lp in enumerate(log_probs)})
        return maps

    def finalize_maps(self, maps: dict[str, torch.Tensor], size: tuple[int, int],
                      reference: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The whole test set's maps -> the official map and score (set-level maxima); the
        validation images' maps with the test set's maxima (``reference``)."""
        layers = range(len(self.channels))
        log_probs = [maps[f"log_prob{l}"] for l in layers]
        ref = None if reference is None else [reference[f"log_prob{l}"] for l in layers]
        return {**maps, **cflow_anomaly_maps(log_probs, tuple(size), ref)}
