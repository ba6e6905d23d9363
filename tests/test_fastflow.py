"""FastFlow: recipe per backbone, parameter counts against the paper, invertibility, exact
log-determinants, anomaly maps and a training step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from uadflows.backbones.base import Extractor, ExtractorSpec
from uadflows.methods import create
from uadflows.methods.fastflow import (
    FastFlow,
    FastFlowConfig,
    LeanAllInOneBlock,
    _subnet,
    build_flow,
    parameter_counts,
)


class TinyExtractor(Extractor):
    """Two random strided convs (strides 4 and 8), tiny channel counts."""

    def __init__(self, channels=(4, 6), image_size: int = 32):
        super().__init__()
        self.spec = ExtractorSpec(
            name="tiny", image_size=(image_size, image_size), channels=tuple(channels),
            shapes=tuple((image_size // s, image_size // s) for s in (4, 8)),
            mean=(0.5,) * 3, std=(0.5,) * 3, weights="random", layers="tiny convs",
        )
        self.stages = nn.ModuleList([nn.Conv2d(3, channels[0], 4, stride=4), nn.Conv2d(channels[0], channels[1], 2, stride=2)])

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        maps, x = [], images
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps


def tiny_fastflow(seed: int = 0, **params) -> FastFlow:
    torch.manual_seed(seed)
    np.random.seed(seed)  # FrEIA draws its fixed permutations from numpy
    params.setdefault("flow_steps", 4)
    model = create("fastflow", backbone=TinyExtractor(**params.pop("extractor", {})), **params)
    with torch.no_grad():  # move every trainable weight off its initial value
        for p in model.trainable_parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


# ---- parameter counts (flows only: no backbone is built) ---------------------------------------


def expected_flow_params(channels: list[int], steps: int, hidden, kernels) -> int:
    """Independent count: per step a Conv(k)-ReLU-Conv(k) subnet from C - C//2 to 2 * (C//2)
    channels through ``hidden(c_in)`` and a global affine (scale and offset, C each)."""
    total = 0
    for c in channels:
        c_in, c_out = c - c // 2, 2 * (c // 2)
        for step in range(steps):
            k, h = kernels(step), hidden(c_in)
            total += c_in * h * k * k + h + h * c_out * k * k + c_out + 2 * c
    return total


def flows_only(backbone: str, **params) -> FastFlow:
    return create("fastflow", backbone=backbone, pretrained=False, build_backbone=False, **params)


def test_resnet18_counts_follow_the_reproduction():
    counts = parameter_counts(flows_only("resnet18"))
    assert counts["trainable"] == expected_flow_params([64, 128, 256], 8, lambda c: c, lambda s: 3) == 4_657_408
    assert counts["layernorm"] == 2 * (64 * 64 * 64 + 128 * 32 * 32 + 256 * 16 * 16) == 917_504
    assert counts["fixed_permutation"] == 8 * 2 * (64**2 + 128**2 + 256**2)


def test_wide_resnet50_matches_the_paper_within_one_percent():
    counts = parameter_counts(flows_only("wide_resnet50_2"))
    alternating = lambda s: 3 if s % 2 == 0 else 1  # noqa: E731
    assert counts["trainable"] == expected_flow_params([256, 512, 1024], 8, lambda c: c, alternating)
    assert abs(counts["trainable"] / 41.3e6 - 1) < 0.01
    assert counts["layernorm"] == 2 * (256 * 64 * 64 + 512 * 32 * 32 + 1024 * 16 * 16)


@pytest.mark.parametrize("backbone", ["cait_m48_448", "deit_base_distilled_patch16_384"])
def test_transformer_variants(backbone):
    alternating = lambda s: 3 if s % 2 == 0 else 1  # noqa: E731
    paper = flows_only(backbone)  # the default variant
    counts = parameter_counts(paper)
    assert paper.config.variant == "paper" and paper.config.flow_steps == 20 and paper.norms is None
    assert counts["trainable"] == expected_flow_params([768], 20, lambda c: 128, alternating)
    assert abs(counts["trainable"] / 14.8e6 - 1) < 0.01
    assert counts["layernorm"] == 0 and counts["fixed_permutation"] == 20 * 2 * 768**2
    repro = parameter_counts(flows_only(backbone, variant="reproduction"))
    assert repro["trainable"] == expected_flow_params([768], 20, lambda c: int(c * 0.16), alternating) == 7_074_500


# ---- recipe and registry ------------------------------------------------------------------------


def _kernels(model: FastFlow, scale: int = 0) -> list[int]:
    return [block.subnet[0].kernel_size[0] for block in model.flows[scale].module_list]


def test_recipe_per_backbone_and_training_settings_on_the_config():
    r18, wrn, lite, deit = (flows_only(b) for b in ("resnet18", "wide_resnet50_2", "tf_efficientnet_lite0", "deit_base_distilled_patch16_384"))
    assert _kernels(r18) == [3] * 8 and _kernels(lite) == [3] * 8
    assert _kernels(wrn) == [3, 1] * 4 and _kernels(deit) == [3, 1] * 10
    assert lite.norms is not None and [tuple(n.normalized_shape) for n in lite.norms] == [(24, 64, 64), (40, 32, 32), (112, 16, 16)]
    for model in (r18, wrn, lite, deit):
        c = model.config
        assert (c.batch_size, c.epochs, c.lr, c.weight_decay, c.clamp) == (32, 500, 1e-3, 1e-5, 2.0)
        assert all(block.clamp == 2.0 for flow in model.flows for block in flow.module_list)
    assert r18.image_size == (256, 256)
    with pytest.raises(TypeError, match="unknown parameter.*flow_stepz"):
        flows_only("resnet18", flow_stepz=3)
    with pytest.raises(ValueError, match="variant 'best'"):
        flows_only("resnet18", variant="best")
    with pytest.raises(ValueError, match="flow_steps must be a positive int"):
        FastFlowConfig(flow_steps=0)


def test_backbone_is_frozen_and_trainable_parameters_are_the_methods_own():
    model = create("fastflow", backbone="resnet18", pretrained=False, image_size=64)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    own = {id(p) for p in [*model.norms.parameters(), *model.flows.parameters()] if p.requires_grad}
    assert {id(p) for p in model.trainable_parameters()} == own
    model.train()
    assert not model.backbone.training and model.flows.training
    out = model.predict(torch.rand(2, 3, 64, 64))
    assert out["map"].shape == (2, 64, 64) and out["score"].shape == (2,)


# ---- the flow itself --------------------------------------------------------------------------


def test_flow_inverts():
    model = tiny_fastflow().eval()
    feats = model.extract(torch.rand(3, 3, 32, 32))
    out = model(feats)
    for back, x, z in zip(model.inverse(out.z), model.prepare(feats), out.z):
        torch.testing.assert_close(back, x, atol=1e-4, rtol=0)
        assert (z - x).abs().max() > 0.1  # the flow is far from the identity


def test_log_det_and_log_likelihood_are_exact():
    """log|det J| from an autograd Jacobian of each (tiny) scale's flow equals FrEIA's;
    the log-likelihood is the sum over scales of Gaussian log-densities and log-dets."""
    model = tiny_fastflow(flow_steps=3, extractor=dict(channels=(3, 4), image_size=16)).double().eval()
    feats = [f.double() for f in model.extract(torch.rand(2, 3, 16, 16).double())]
    out = model(feats)
    expected = torch.zeros(2, dtype=torch.float64)
    for i, (flow, x) in enumerate(zip(model.flows, model.prepare(feats))):
        for b in range(2):
            jac = torch.func.jacrev(lambda v: flow(v[None])[0][0])(x[b])
            d = x[b].numel()
            log_det = torch.linalg.slogdet(jac.reshape(d, d))[1]
            torch.testing.assert_close(out.log_jac[i][b], log_det, atol=1e-6, rtol=1e-6)
            z = out.z[i][b]
            expected[b] += -0.5 * (z**2).sum() - 0.5 * d * math.log(2 * math.pi) + log_det
    loglik = model.log_likelihood(out)
    torch.testing.assert_close(loglik, expected)
    const = sum(0.5 * z[0].numel() * math.log(2 * math.pi) for z in out.z)
    torch.testing.assert_close(model.loss(out), -(loglik + const).mean())


def test_anomaly_map_formula_size_and_score():
    model = tiny_fastflow().eval()
    out = model(model.extract(torch.rand(2, 3, 32, 32)), with_log_jac=False)
    assert out.log_jac is None
    maps = model.anomaly_maps(out, (37, 50))
    assert maps["map"].shape == (2, 37, 50) and maps["score"].shape == (2,)
    assert ((maps["map"] >= 0) & (maps["map"] <= 1)).all()
    torch.testing.assert_close(maps["score"], maps["map"].flatten(1).max(1).values)
    # By hand at the feature resolution of scale 0 (no resampling needed there).
    z0, z1 = out.z
    p0 = torch.exp(-0.5 * (z0**2).mean(1))
    p1 = nn.functional.interpolate(torch.exp(-0.5 * (z1**2).mean(1, keepdim=True)), size=z0.shape[-2:], mode="bilinear")[:, 0]
    torch.testing.assert_close(model.anomaly_maps(out, tuple(z0.shape[-2:]))["map"], 1 - (p0 + p1) / 2)
    # Latents at the origin are perfectly normal; far latents score near one.
    zero = type(out)(z=[torch.zeros_like(z) for z in out.z])
    far = type(out)(z=[torch.full_like(z, 10.0) for z in out.z])
    assert model.anomaly_maps(zero, (8, 8))["score"].max() == 0
    assert model.anomaly_maps(far, (8, 8))["score"].min() > 0.99


def test_wrong_features_are_rejected():
    model = tiny_fastflow()
    feats = model.extract(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="got 1 feature scales"):
        model(feats[:1])
    with pytest.raises(ValueError, match=r"feature scale 1 is \(5, 4, 4\), expected"):
        model([feats[0], torch.zeros(1, 5, 4, 4)])


def test_train_setup_and_a_few_steps_lower_the_loss():
    model = tiny_fastflow(seed=1).train()
    setup = model.train_setup(epochs=1, steps_per_epoch=5)
    assert isinstance(setup.optimizer, torch.optim.Adam) and setup.scheduler is None
    group = setup.optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (1e-3, 1e-5)
    feats = model.extract(torch.rand(4, 3, 32, 32))
    backbone_before = [p.clone() for p in model.backbone.parameters()]
    losses = []
    for _ in range(5):
        loss = model.loss(model(feats))
        setup.optimizer.zero_grad()
        loss.backward()
        setup.optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(a, b) for a, b in zip(backbone_before, model.backbone.parameters()))


# ---- issue 9: the lean permutation ------------------------------------------------------------


@pytest.mark.parametrize("conv3x3_only", [True, False])
def test_lean_block_equals_freia_block_for_the_same_weights(conv3x3_only):
    torch.manual_seed(0)
    np.random.seed(0)
    config = FastFlowConfig(flow_steps=4, conv3x3_only=conv3x3_only, lean_permutation=False)
    ref = build_flow((9, 6, 5), config)  # odd channel count: unequal coupling halves
    assert not any(isinstance(b, LeanAllInOneBlock) for b in ref.module_list)
    lean = build_flow((9, 6, 5), FastFlowConfig(flow_steps=4, conv3x3_only=conv3x3_only, lean_permutation=True))
    assert all(isinstance(b, LeanAllInOneBlock) for b in lean.module_list)
    with torch.no_grad():
        for p in ref.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn_like(p))
    lean.load_state_dict(ref.state_dict())  # same parameters, same names: the indices follow
    assert [b.perm_index.tolist() for b in lean.module_list] == [b.w_perm[:, :, 0, 0].argmax(1).tolist() for b in ref.module_list]
    x = torch.randn(3, 9, 6, 5)
    with torch.no_grad():
        (z_ref, j_ref), (z_lean, j_lean) = ref(x), lean(x)
        torch.testing.assert_close(z_lean, z_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(j_lean, j_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lean(z_ref, rev=True)[0], ref(z_ref, rev=True)[0], atol=1e-5, rtol=1e-5)
        ref64, lean64 = ref.double(), lean.double()
        (z_ref, j_ref), (z_lean, j_lean) = ref64(x.double()), lean64(x.double())
    torch.testing.assert_close(z_lean, z_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(j_lean, j_ref, atol=1e-8, rtol=0)


def test_lean_flag_through_the_registry_and_bad_permutation():
    model = flows_only("resnet18", lean_permutation=True)
    assert model.config.lean_permutation
    assert all(isinstance(b, LeanAllInOneBlock) for flow in model.flows for b in flow.module_list)
    assert parameter_counts(model) == parameter_counts(flows_only("resnet18"))
    with pytest.raises(ValueError, match="not a hard permutation"):
        block = model.flows[0].module_list[0]
        block.load_state_dict({**block.state_dict(), "w_perm": torch.full_like(block.w_perm, 0.5)})


@pytest.mark.parametrize("conv3x3_only", [True, False])
def test_lean_block_gradients_and_latents_only_equal_freia(conv3x3_only):
    """Training goes through the lean forward with autograd: the gradients of FastFlow's loss
    must be FrEIA's (float64: the same arithmetic to 1e-10; float32: to rounding); scoring
    asks for latents only (jac=False, no grad: the in-place path)."""
    torch.manual_seed(0)
    np.random.seed(0)
    ref = build_flow((9, 6, 5), FastFlowConfig(flow_steps=4, conv3x3_only=conv3x3_only, lean_permutation=False))
    lean = build_flow((9, 6, 5), FastFlowConfig(flow_steps=4, conv3x3_only=conv3x3_only, lean_permutation=True))
    with torch.no_grad():
        for p in ref.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn_like(p))
    lean.load_state_dict(ref.state_dict())
    x32 = torch.randn(3, 9, 6, 5)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        ref, lean, x = ref.to(dtype), lean.to(dtype), x32.to(dtype).requires_grad_()
        grads = []
        for flow in (ref, lean):
            flow.zero_grad()
            x.grad = None
            z, log_jac = flow(x)
            (0.5 * z.pow(2).sum() - log_jac.sum()).backward()
            grads.append([x.grad.clone()] + [p.grad.clone() for p in flow.parameters() if p.requires_grad])
        for g_lean, g_ref in zip(*reversed(grads)):
            torch.testing.assert_close(g_lean, g_ref, atol=tol * g_ref.abs().max().item(), rtol=tol)
    with torch.inference_mode():
        z_only, zeros = lean(x32, jac=False)
        z_ref, j_ref = ref(x32)
        z_lean, j_lean = lean(x32)
    torch.testing.assert_close(z_only, z_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(z_lean, z_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(j_lean, j_ref, atol=1e-5, rtol=1e-5)
    assert not zeros.any()


def test_lean_block_refuses_what_it_does_not_implement():
    def mlp(c_in, c_out):
        return torch.nn.Sequential(torch.nn.Conv2d(c_in, c_out, 1))

    with pytest.raises(ValueError, match="Conv2d-ReLU-Conv2d"):
        LeanAllInOneBlock([(4, 3, 3)], subnet_constructor=mlp, permute_soft=False)
    with pytest.raises(ValueError, match="reverse_permutation"):
        LeanAllInOneBlock([(4, 3, 3)], subnet_constructor=_subnet(1, FastFlowConfig()), permute_soft=False,
                          reverse_permutation=True)
    assert FastFlowConfig().lean_permutation  # the lean block is the default
