"""FastFlow (Yu et al. 2021, arXiv 2111.07677) on frozen backbone features.

One 2-D flow per feature scale, each a chain of FrEIA ``AllInOneBlock`` steps (affine
coupling with a Conv-ReLU-Conv subnet, soft clamp, hard random permutation, global
affine); ResNet-like backbones get a trainable ``LayerNorm([C, H, W])`` per scale first,
as the reference reproduction gathierry/FastFlow does. See docs/methods/fastflow.md.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import torch
import torch.nn.functional as F
from torch import nn

from uadflows.backbones.base import Extractor, ExtractorSpec
from uadflows.methods import register
from uadflows.methods.base import FlowMethod, FlowOutput, TrainSetup
from uadflows.methods.layernorm import PreFlowLayerNorm, check_norm

VARIANTS = ("paper", "reproduction")
# Transformer subnet width in the "paper" variant: 768 / 6, which gives the paper's
# 14.8M extra parameters for CaiT and DeiT (the reproduction's int(384 * 0.16) = 61 gives 7.1M).
PAPER_VIT_HIDDEN = 128


@dataclass
class FastFlowConfig:
    """FastFlow's recipe. ``hidden_ratio`` scales the subnet's input channels (the half a
    coupling sees, C - C // 2) as in gathierry/FastFlow; ``hidden_channels`` fixes the
    width instead. Kernels alternate 3x3 / 1x1 unless ``conv3x3_only``."""

    flow_steps: int = 8
    hidden_ratio: float = 1.0
    hidden_channels: int | None = None
    conv3x3_only: bool = False
    layernorm: bool = True
    # Issue 22: "faithful" (the paper's, default), "bounded" (the LayerNorm's affine counted
    # in the log-det) or "no-affine"; methods/layernorm.py says why.
    norm: str = "faithful"
    clamp: float = 2.0
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 32
    epochs: int = 500
    variant: str = "paper"
    # Issue 9: LeanAllInOneBlock (index permutation; cheaper arithmetic when scoring; same
    # weights, same outputs to float precision, faster: docs/benchmarks.md); False gives
    # FrEIA's AllInOneBlock, the reference, tested equal.
    lean_permutation: bool = True

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"fastflow: variant {self.variant!r} is not one of {', '.join(VARIANTS)}")
        for key in ("flow_steps", "batch_size", "epochs"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"fastflow: {key} must be a positive int, got {value!r}")
        for key in ("hidden_ratio", "clamp", "lr"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"fastflow: {key} must be a positive number, got {value!r}")
        if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise ValueError(f"fastflow: weight_decay must be >= 0, got {self.weight_decay!r}")
        check_norm(self.norm, "fastflow")
        if self.norm != "faithful" and not self.layernorm:
            raise ValueError(f"fastflow: norm {self.norm!r} needs layernorm: true (this recipe has no trainable LayerNorm)")
        if self.hidden_channels is not None and (not isinstance(self.hidden_channels, int) or self.hidden_channels < 1):
            raise ValueError(f"fastflow: hidden_channels must be a positive int or None, got {self.hidden_channels!r}")

    def hidden_width(self, subnet_in: int) -> int:
        return self.hidden_channels if self.hidden_channels is not None else int(subnet_in * self.hidden_ratio)

    def kernel_size(self, step: int) -> int:
        return 3 if self.conv3x3_only or step % 2 == 0 else 1

    @classmethod
    def for_backbone(cls, backbone: str, variant: str = "paper", **overrides: Any) -> "FastFlowConfig":
        """The recipe for a backbone set-up name, then ``overrides`` (config field names)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"fastflow: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        config = cls(variant=variant, **_recipe(backbone, variant))
        return replace(config, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _backbone_kind(backbone: str) -> str:
    from uadflows.backbones.setups import kind_of

    try:
        return kind_of(backbone)
    except KeyError:  # a custom extractor: treat as a CNN
        return "cnn"


def _recipe(backbone: str, variant: str) -> dict[str, Any]:
    arch = backbone.split(".")[0]
    if _backbone_kind(backbone) in ("vit", "multi"):
        # Transformers: 20 steps, hidden ratio 0.16, alternating kernels, the backbone's own
        # (pretrained, frozen) norm instead of a trainable LayerNorm.
        hidden = PAPER_VIT_HIDDEN if variant == "paper" else None
        return dict(flow_steps=20, hidden_ratio=0.16, hidden_channels=hidden, layernorm=False)
    # ResNet18 uses 3x3 kernels only (gathierry/FastFlow configs); the demo's
    # EfficientNet-Lite0 (24/40/112 channels, even smaller) follows ResNet18.
    small = arch in ("resnet18", "tf_efficientnet_lite0")
    return dict(flow_steps=8, hidden_ratio=1.0, conv3x3_only=small, layernorm=True)


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


LOG2E = 1.0 / math.log(2.0)


class LeanAllInOneBlock(Fm.AllInOneBlock):
    """FrEIA's AllInOneBlock with its hard permutation applied as a channel gather instead
    of a dense C x C 1x1 convolution (B*H*W*C^2 multiply-adds), and, without gradients
    (scoring), the whole step computed in fewer, cheaper passes (see ``forward``). Same
    parameters and state dict as the parent, so weights move freely between the two."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.w_perm is None or self.GIN or self.reverse_pre_permute:
            raise ValueError("LeanAllInOneBlock: needs a fixed permutation (no Householder), no GIN and no reverse_permutation")
        s = self.subnet
        if not (isinstance(s, nn.Sequential) and len(s) == 3 and isinstance(s[0], nn.Conv2d)
                and isinstance(s[1], nn.ReLU) and isinstance(s[2], nn.Conv2d)):
            raise ValueError("LeanAllInOneBlock: the subnet must be Conv2d-ReLU-Conv2d (FastFlow's)")
        self.register_buffer("perm_index", torch.empty(0, dtype=torch.long), persistent=False)
        self.register_buffer("inverse_index", torch.empty(0, dtype=torch.long), persistent=False)
        self._index_from_matrix()
        self.register_load_state_dict_post_hook(lambda module, _: module._index_from_matrix())

    @torch.no_grad()
    def _index_from_matrix(self) -> None:
        w = self.w_perm.detach().reshape(self.in_channels, self.in_channels).cpu()
        if not (torch.all((w == 0) | (w == 1)) and torch.all(w.sum(0) == 1) and torch.all(w.sum(1) == 1)):
            raise ValueError("LeanAllInOneBlock: w_perm is not a hard permutation (permute_soft must be False)")
        # conv2d(x, w)[:, i] = sum_j w[i, j] x[:, j] = x[:, index[i]]
        index = w.argmax(dim=1).to(self.w_perm.device)
        self.perm_index = index
        self.inverse_index = torch.argsort(index)

    def _permute(self, x: torch.Tensor, rev: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.global_scale_activation(self.global_scale)
        log_jac = torch.sum(torch.log(scale))
        if rev:
            return (x.index_select(1, self.inverse_index) - self.global_offset) / scale, log_jac
        # (x * s + t)[:, index] == x[:, index] * s[index] + t[index]: one fused pass.
        index = self.perm_index
        return torch.addcmul(self.global_offset.index_select(1, index), x.index_select(1, index), scale.index_select(1, index)), log_jac

    def forward(self, x, c=[], rev=False, jac=True):  # noqa: B006 - FrEIA's signature
        """With gradients (training) and in reverse: FrEIA's arithmetic, permuted by the
        gather. Without gradients (scoring): the same function in fewer, cheaper passes
        (the same arithmetic under autograd measured no faster in training, where the
        subnet's convolutions dominate: docs/benchmarks.md)."""
        if rev or self.conditional or torch.is_grad_enabled():
            return super().forward(x, c, rev=rev, jac=jac)
        x = x[0]
        c1, ch = self.splits
        x1, x2 = x[:, :c1], x[:, c1:]
        conv1, _, conv2 = self.subnet
        clamp = self.clamp
        scale = self.global_scale_activation(self.global_scale)[0, :, 0, 0]
        offset = self.global_offset[0, :, 0, 0]
        s2 = scale[c1:]
        # Folded into conv2's weights and bias (a few thousand numbers) instead of passes
        # over its output: FrEIA's 0.1, the 2 of tanh(y) = 2 sigmoid(2y) - 1 on the scale
        # half, and on the shift half the global affine of the channels it shifts.
        w, b = conv2.weight, conv2.bias
        w = torch.cat((w[:ch] * 0.2, w[ch:] * (0.1 * s2)[:, None, None, None]))
        b = torch.cat((b[:ch] * 0.2, b[ch:] * (0.1 * s2) + offset[c1:]))
        a = F.conv2d(torch.relu_(conv1(x1)), w, b, padding=conv2.padding)
        sig = torch.sigmoid_(a[:, :ch])  # clamp * tanh(0.1 subnet) = clamp * (2 sig - 1)
        # x2 * exp(sub_jac) * s2 = x2 * exp2(sub_jac * log2(e) + log2(s2)): on the CPU,
        # torch's tanh is 7.6x and exp 2.4x slower than sigmoid and exp2.
        log2_s2 = torch.log2(s2)[:, None, None]
        if jac:
            sub_jac = sig.mul_(2.0 * clamp).sub_(clamp)
            log_jac = sub_jac.sum(dim=self.sum_dims) + x[0, :1].numel() * torch.sum(torch.log(scale))
            exponent = sub_jac.mul_(LOG2E).add_(log2_s2)
        else:  # SequenceINN adds the blocks' log-dets: zeros keep that working
            log_jac = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            exponent = sig.mul_(2.0 * clamp * LOG2E).add_(log2_s2 - clamp * LOG2E)
        y2 = torch.addcmul(a[:, ch:], x2, exponent.exp2_())
        y1 = torch.addcmul(offset[:c1, None, None], x1, scale[:c1, None, None])
        # out[:, i] = (y1, y2)[:, index[i]]: each half copied once to its permuted place
        out = torch.empty_like(x)
        out.index_copy_(1, self.inverse_index[:c1], y1)
        out.index_copy_(1, self.inverse_index[c1:], y2)
        return (out,), log_jac


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


class FastFlow(FlowMethod):
    name = "fastflow"

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
        """map = 1 - mean over scales of exp(-0.5 * mean_c z^2) (bilinear to ``size``), in
        [0, 1]: the reproduction's -prob plus one, so the same ranking; score = max."""
        probs = []
        for z in out.z:
            prob = torch.exp(-0.5 * z.pow(2).mean(dim=1, keepdim=True))
            probs.append(F.interpolate(prob, size=tuple(size), mode="bilinear", align_corners=False))
        amap = 1.0 - torch.stack(probs, dim=0).mean(dim=0)[:, 0]
        return {"map": amap, "score": amap.flatten(1).amax(dim=1)}

    def norm_scales(self) -> list[float] | None:
        """Mean affine weight of each scale's pre-flow LayerNorm (training health)."""
        if self.norms is None or self.config.norm == "no-affine":
            return None
        return [n.scale() for n in self.norms]

    def train_setup(self, epochs: int, steps_per_epoch: int) -> TrainSetup:
        opt = torch.optim.Adam(self.trainable_parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
        return TrainSetup(optimizer=opt)


def parameter_counts(model: FastFlow) -> dict[str, int]:
    """trainable: flow subnets + global affine; layernorm: the per-scale LayerNorms;
    fixed_permutation: FrEIA's permutation matrices (parameters without gradient)."""
    flows = [p for n, p in model.flows.named_parameters()]
    fixed = sum(p.numel() for p in flows if not p.requires_grad)
    trainable = sum(p.numel() for p in flows if p.requires_grad)
    layernorm = sum(p.numel() for p in model.norms.parameters()) if model.norms is not None else 0
    return {"trainable": trainable, "layernorm": layernorm, "fixed_permutation": fixed}


def _as_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


@register("fastflow")
def create_fastflow(
    backbone: str | Extractor = "resnet18",
    pretrained: bool | str | os.PathLike = True,
    image_size: int | tuple[int, int] | None = None,
    cache_dir: str | os.PathLike | None = None,
    variant: str = "paper",
    **params: Any,
) -> FastFlow:
    """FastFlow on a backbone set-up name (or a ready Extractor). ``pretrained``: True,
    False (random, tests) or a weights file; ``image_size`` None: the set-up's default
    (256 px for CNNs); ``params``: FastFlowConfig fields (unknown keys raise)."""
    if isinstance(backbone, Extractor):
        extractor = backbone
        if image_size is not None and _as_pair(image_size) != tuple(extractor.spec.image_size):
            raise ValueError(f"fastflow: image_size {image_size} differs from the given extractor's {tuple(extractor.spec.image_size)}")
    else:
        from uadflows.backbones import create_extractor  # heavy: imported on use

        weights_file = None if isinstance(pretrained, bool) else pretrained
        extractor = create_extractor(
            backbone, image_size=image_size, pretrained=True if weights_file is not None else bool(pretrained),
            weights_file=weights_file, cache_dir=cache_dir,
        )
    config = FastFlowConfig.for_backbone(extractor.spec.name, variant=variant, **params)
    return FastFlow(extractor, config)


__all__ = ["FastFlow", "FastFlowConfig", "LeanAllInOneBlock", "build_flow", "create_fastflow", "parameter_counts"]
