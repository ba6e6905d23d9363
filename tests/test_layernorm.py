"""Issue 22: FastFlow's pre-flow LayerNorm in its three modes; the bounded variant's log-det.

The loss is gathierry/FastFlow's: per scale the batch mean of 0.5 ||z||^2 - log|det J|,
summed over scales, with no per-dimension normalisation (fastflow.FastFlow.loss). So the
bounded LayerNorm adds exactly sum over scales of C*H*W * log|s| to every sample's log-det
when its weights are scaled by s, and the loss moves by minus that.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from test_fastflow import tiny_fastflow
from uadflows.methods.fastflow import FastFlowConfig
from uadflows.methods.layernorm import PreFlowLayerNorm

SMALL = dict(flow_steps=3, extractor=dict(channels=(3, 4), image_size=16))


def twins(**params):
    """The same weights as ``faithful`` and ``bounded`` models, in float64."""
    faithful = tiny_fastflow(norm="faithful", **params).double().eval()
    bounded = tiny_fastflow(norm="bounded", **params).double().eval()
    bounded.load_state_dict(faithful.state_dict())
    return faithful, bounded


def scale_norms(model, s: float) -> None:
    with torch.no_grad():
        for norm in model.norms:
            norm.weight.mul_(s)


@pytest.mark.parametrize("s", [0.07, 0.5, 3.0, -2.0])
def test_bounded_loss_moves_by_exactly_sum_log_s(s):
    faithful, bounded = twins(**SMALL)
    feats = [f.double() for f in faithful.extract(torch.rand(3, 3, 16, 16).double())]
    before_f, before_b = faithful.loss(faithful(feats)), bounded.loss(bounded(feats))
    # same weights: the two losses differ by the LayerNorm's sum log|w| (in the log-det)
    log_w = sum(torch.log(n.weight.abs()).sum() for n in bounded.norms)
    torch.testing.assert_close(before_b, before_f - log_w, rtol=0, atol=1e-9)
    scale_norms(faithful, s)
    scale_norms(bounded, s)
    after_f, after_b = faithful.loss(faithful(feats)), bounded.loss(bounded(feats))
    dims = sum(c * h * w for c, h, w in bounded.chw)  # 3*4*4 + 4*2*2 = 64
    assert dims == 64
    torch.testing.assert_close(after_b - before_b, (after_f - before_f) - dims * math.log(abs(s)),
                               rtol=0, atol=1e-9)


class Rescaled(nn.Module):
    """flow(x / s): a flow that undoes a LayerNorm scaled by s (log-det - n log|s|)."""

    def __init__(self, flow, s: float):
        super().__init__()
        self.flow, self.s = flow, s

    @property
    def module_list(self):  # FastFlow.prepare reads the flow's dtype from its first block
        return self.flow.module_list

    def forward(self, x, jac=True):
        z, log_jac = self.flow(x / self.s, jac=jac)
        return z, log_jac - x[0].numel() * math.log(abs(self.s))


@pytest.mark.parametrize("s", [0.01, 0.3])
def test_shrinking_the_layernorm_is_free_reward_only_in_the_faithful_objective(s):
    """LayerNorm weights (and biases) times s, the flow composed with 1/s: the same latents
    (the same map from normalised features to z). The faithful loss falls by n log(1/s),
    without bound as s -> 0 (the collapse); the bounded loss does not move."""
    for norm, reward in (("faithful", True), ("bounded", False)):
        model = tiny_fastflow(norm=norm, **SMALL).double().eval()
        feats = [f.double() for f in model.extract(torch.rand(3, 3, 16, 16).double())]
        out = model(feats)
        before = model.loss(out)
        with torch.no_grad():
            for n in model.norms:
                n.weight.mul_(s)
                n.bias.mul_(s)
        model.flows = nn.ModuleList([Rescaled(f, s) for f in model.flows])
        after_out = model(feats)
        for z, z_after in zip(out.z, after_out.z):
            torch.testing.assert_close(z_after, z)
        dims = sum(c * h * w for c, h, w in model.chw)
        expected = before - dims * math.log(1 / s) if reward else before
        torch.testing.assert_close(model.loss(after_out), expected, rtol=0, atol=1e-8)


def test_bounded_log_det_is_the_jacobian_from_normalised_features_to_latents():
    """log_jac (bounded) = log|det| of autograd's Jacobian of n -> flow(w * n + b), n the
    LayerNorm-ed features without the affine: the LayerNorm's affine is a counted flow step."""
    _, model = twins(**SMALL)
    feats = [f.double() for f in model.extract(torch.rand(2, 3, 16, 16).double())]
    out = model(feats)
    for i, (flow, norm, f) in enumerate(zip(model.flows, model.norms, feats)):
        n = nn.functional.layer_norm(f, norm.normalized_shape, eps=norm.eps)
        for b in range(2):
            jac = torch.func.jacrev(lambda v: flow((v * norm.weight + norm.bias)[None])[0][0])(n[b])
            d = n[b].numel()
            torch.testing.assert_close(out.log_jac[i][b], torch.linalg.slogdet(jac.reshape(d, d))[1])


def test_no_affine_has_nothing_to_shrink_and_bad_norms_are_named():
    model = tiny_fastflow(norm="no-affine")
    assert all(n.weight is None and n.bias is None for n in model.norms)
    assert model.norm_scales() is None and PreFlowLayerNorm((2, 3, 3), "no-affine").log_det() is None
    assert tiny_fastflow(norm="bounded").norm_scales() is not None
    faithful, bounded = tiny_fastflow(norm="faithful"), tiny_fastflow(norm="bounded")
    assert faithful.state_dict().keys() == bounded.state_dict().keys()  # checkpoints move freely
    with pytest.raises(ValueError, match="fastflow: norm 'affine' is not one of faithful, bounded, no-affine"):
        FastFlowConfig(norm="affine")
    with pytest.raises(ValueError, match="fastflow: norm 'bounded' needs layernorm: true"):
        FastFlowConfig(norm="bounded", layernorm=False)
    assert FastFlowConfig().norm == "faithful"  # the paper's recipe stays the default


# ---- U-Flow's CNN path (mtailanian/uflow src/feature_extraction.py:48-53) ---------------------
# U-Flow's loss (UFlow.loss, the official normalisation): the batch mean of the per-sample sum
# over scales of 0.5 ||z_s||^2 - log_jac_s, a sum over every dimension too. So scaling the
# bounded LayerNorms' weights by s moves it by exactly -sum_s C_s H_s W_s log|s|.
from test_uflow import tiny_uflow  # noqa: E402
from uadflows.health import EpochHealth  # noqa: E402
from uadflows.methods import create  # noqa: E402
from uadflows.methods.uflow import UFlowConfig  # noqa: E402

UFLOW_DIMS = 4 * 8 * 8 + 8 * 4 * 4 + 16 * 2 * 2  # TinyExtractor at 32 px: 448 normalised elements


def uflow_twins():
    faithful = tiny_uflow(norm="faithful", compute_nfa=False).double().eval()
    bounded = tiny_uflow(norm="bounded", compute_nfa=False).double().eval()
    bounded.load_state_dict(faithful.state_dict())  # old (faithful) checkpoints load unchanged
    return faithful, bounded


@pytest.mark.parametrize("s", [0.07, 0.5, 3.0, -2.0])
def test_uflow_bounded_loss_moves_by_exactly_sum_log_s(s):
    faithful, bounded = uflow_twins()
    feats = [f.double() for f in faithful.extract(torch.rand(3, 3, 32, 32).double())]
    before_f, before_b = faithful.loss(faithful(feats)), bounded.loss(bounded(feats))
    log_w = sum(torch.log(n.weight.abs()).sum() for n in bounded.norms)
    torch.testing.assert_close(before_b, before_f - log_w, rtol=0, atol=1e-9)
    scale_norms(faithful, s)
    scale_norms(bounded, s)
    after_f, after_b = faithful.loss(faithful(feats)), bounded.loss(bounded(feats))
    assert sum(math.prod(n.normalized_shape) for n in bounded.norms) == UFLOW_DIMS
    assert not torch.isclose(after_f, before_f)  # the flow does respond to the scaling
    torch.testing.assert_close(after_b - before_b, (after_f - before_f) - UFLOW_DIMS * math.log(abs(s)),
                               rtol=0, atol=1e-9)


class RescaledU(nn.Module):
    """The U-shaped flow on features / s: undoes LayerNorms scaled by s (log-det - n log|s|)."""

    def __init__(self, flow, s: float):
        super().__init__()
        self.flow, self.s, self.input_shapes = flow, s, flow.input_shapes

    def forward(self, features):
        z, log_jac = self.flow([f / self.s for f in features])
        return z, [lj - f[0].numel() * math.log(abs(self.s)) for lj, f in zip(log_jac, features)]


@pytest.mark.parametrize("s", [0.01, 0.3])
def test_uflow_shrinking_the_layernorm_is_free_reward_only_in_the_faithful_objective(s):
    """Same latents after the LayerNorm (weights and biases) times s and the flow composed with
    1/s: the faithful loss falls by n log(1/s), without bound; the bounded one does not move."""
    for norm, reward in (("faithful", True), ("bounded", False)):
        model = tiny_uflow(norm=norm, compute_nfa=False).double().eval()
        feats = [f.double() for f in model.extract(torch.rand(3, 3, 32, 32).double())]
        out = model(feats)
        before = model.loss(out)
        with torch.no_grad():
            for n in model.norms:
                n.weight.mul_(s)
                n.bias.mul_(s)
        model.flow = RescaledU(model.flow, s)
        after_out = model(feats)
        for z, z_after in zip(out.z, after_out.z):
            torch.testing.assert_close(z_after, z)
        expected = before - UFLOW_DIMS * math.log(1 / s) if reward else before
        torch.testing.assert_close(model.loss(after_out), expected, rtol=0, atol=1e-8)


def test_uflow_norm_modes_health_and_refusals():
    faithful, bounded = tiny_uflow(norm="faithful"), tiny_uflow(norm="bounded")
    assert faithful.state_dict().keys() == bounded.state_dict().keys()
    assert "norms.0.weight" in faithful.state_dict()  # the keys of U-Flow's nn.LayerNorm, as before
    assert bounded.norm_scales() == pytest.approx([1.0, 1.0, 1.0])
    with torch.no_grad():
        bounded.norms[2].weight.mul_(0.25)
    health = EpochHealth()
    health.add(bounded(bounded.extract(torch.rand(2, 3, 32, 32))))
    row = health.row(bounded)  # what training health writes to history.csv
    assert [row[f"ln_scale{i}"] for i in range(3)] == pytest.approx([1.0, 1.0, 0.25])
    no_affine = tiny_uflow(norm="no-affine")
    assert all(n.weight is None for n in no_affine.norms) and no_affine.norm_scales() is None
    assert UFlowConfig().norm == "faithful"  # the official recipe stays the default
    with pytest.raises(ValueError, match="uflow config: norm 'affine' is not one of faithful, bounded, no-affine"):
        UFlowConfig(norm="affine")
    with pytest.raises(ValueError, match="uflow config: norm 'no-affine' needs a LayerNorm, but layernorm is false"):
        UFlowConfig(norm="no-affine", layernorm=False)
    # MS-CaiT gets no LayerNorm (layernorm: null): the variants have nothing to act on.
    with pytest.raises(ValueError, match="uflow: norm 'bounded' needs a LayerNorm, but extractor 'ms_cait'"):
        create("uflow", backbone="ms_cait", pretrained=False, build_backbone=False, flow_steps=1, norm="bounded")
    assert create("uflow", backbone="ms_cait", pretrained=False, build_backbone=False, flow_steps=1).norms is None
