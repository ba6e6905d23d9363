"""U-Flow: the U-shaped flow, the method contract, and the a-contrario NFA segmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.stats import chi2
from torch import nn

from uadflows.backbones.base import Extractor, ExtractorSpec
from uadflows.methods import FlowOutput, create
from uadflows.methods.uflow import (
    UFlow,
    UFlowConfig,
    UShapedFlow,
    log10_number_of_tests,
    log10_pixel_tail,
    log_nfa_map,
    nfa,
    region_log10_prob_map,
)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # Tiny tensors: on a shared 2-core machine, thread hand-offs cost 20x the compute.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class TinyExtractor(Extractor):
    """Frozen random 1x1 projections of average-pooled images, fine -> coarse."""

    def __init__(self, channels=(4, 8, 16), strides=(4, 8, 16), image_size=32):
        super().__init__()
        self.strides = strides
        self.spec = ExtractorSpec(
            name="tiny",
            image_size=(image_size, image_size),
            channels=tuple(channels),
            shapes=tuple((image_size // s, image_size // s) for s in strides),
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            weights="random",
            layers="test",
        )
        self.projections = nn.ModuleList(nn.Conv2d(3, c, 1) for c in channels)

    def forward(self, images):
        return [proj(F.avg_pool2d(images, s)) for proj, s in zip(self.projections, self.strides)]


def tiny_uflow(**config) -> UFlow:
    torch.manual_seed(0)
    np.random.seed(0)  # FrEIA draws AllInOneBlock's hard permutations from numpy
    return UFlow(TinyExtractor(), UFlowConfig(image_size=32, **config))


# ---- the U-shaped flow ----------------------------------------------------------------------
def test_flow_output_channels_follow_the_split_and_pixel_shuffle():
    flow = UShapedFlow([(768, 28, 28), (384, 14, 14)], steps=1)
    # README of the official code: 816 = 768 + 384 / 2 / 4 and 192 = 384 / 2
    assert flow.output_shapes == [(816, 28, 28), (192, 14, 14)]


def test_flow_inverts_with_exact_log_determinant():
    torch.manual_seed(1)
    np.random.seed(1)
    shapes = [(2, 8, 8), (8, 4, 4), (8, 2, 2)]  # three scales: 288 dimensions
    flow = UShapedFlow(shapes, steps=4).double()
    with torch.no_grad():  # move away from the near-identity initialisation
        for p in flow.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn_like(p))
    features = [torch.randn(2, *s, dtype=torch.float64) for s in shapes]
    z, log_jac = flow(features)
    assert [tuple(t.shape[1:]) for t in z] == flow.output_shapes
    assert sum(t[0].numel() for t in z) == sum(f[0].numel() for f in features)
    recovered = flow.inverse(z)
    for f, r in zip(features, recovered):
        assert torch.allclose(f, r, atol=1e-4, rtol=0)
        assert (f - r).abs().max() < 1e-10  # float64: far below the required 1e-4

    def flat_forward(x_flat):
        parts, start = [], 0
        for c, h, w in shapes:
            parts.append(x_flat[start : start + c * h * w].view(1, c, h, w))
            start += c * h * w
        out, _ = flow(parts)
        return torch.cat([t.flatten() for t in out])

    x0 = torch.cat([f[0].flatten() for f in features])
    jacobian = torch.autograd.functional.jacobian(flat_forward, x0)
    sign, logabsdet = torch.linalg.slogdet(jacobian)
    assert sign != 0
    total = sum(lj[0] for lj in log_jac)
    assert abs(total.item() - logabsdet.item()) < 1e-6
    assert abs(total.item()) > 1.0  # a non-trivial transform


def test_flow_rejects_scales_that_do_not_halve_or_are_too_thin():
    with pytest.raises(ValueError, match="halve"):
        UShapedFlow([(4, 8, 8), (8, 3, 3)])
    with pytest.raises(ValueError, match="at least 8"):
        UShapedFlow([(4, 8, 8), (6, 4, 4)])
    with pytest.raises(ValueError, match="at least 2 scales"):
        UShapedFlow([(4, 8, 8)])


# ---- the method contract ----------------------------------------------------------------------
def test_forward_loss_and_maps_on_tiny_extractor():
    model = tiny_uflow(n_scales=2)
    images = torch.rand(3, 3, 32, 32)
    features = model.extract(images)
    out = model(features)
    assert [tuple(t.shape) for t in out.z] == [(3, 10, 4, 4), (3, 8, 2, 2)]  # 8 + 16/2/4 ; 16/2
    assert [tuple(lj.shape) for lj in out.log_jac] == [(3,), (3,)]
    loss = model.loss(out)
    expected = sum(0.5 * (t**2).sum((1, 2, 3)) - lj for t, lj in zip(out.z, out.log_jac)).mean()
    assert loss.ndim == 0 and torch.isclose(loss, expected)
    loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.flow.parameters())

    maps = model.anomaly_maps(model(features, with_log_jac=False), (32, 32))
    assert set(maps) == {"map", "score", "log_nfa"}
    assert maps["map"].shape == (3, 32, 32) and maps["log_nfa"].shape == (3, 32, 32)
    assert torch.equal(maps["score"], maps["map"].flatten(1).amax(1))
    assert ((maps["map"] >= 0) & (maps["map"] <= 1)).all()
    with pytest.raises(ValueError, match="log-determinants"):
        model.loss(model(features, with_log_jac=False))


def test_anomaly_map_is_one_minus_mean_upsampled_likelihood():
    model = tiny_uflow(compute_nfa=False)
    z_fine = torch.full((1, 10, 4, 4), 2.0)  # exp(-0.5 * 4) everywhere
    z_coarse = torch.zeros(1, 8, 2, 2)  # exp(0) = 1 everywhere
    maps = model.anomaly_maps(FlowOutput(z=[z_fine, z_coarse]), (8, 8))
    expected = 1 - (math.exp(-2.0) + 1.0) / 2
    assert torch.allclose(maps["map"], torch.full((1, 8, 8), expected), atol=1e-6)
    assert "log_nfa" not in maps


def test_uses_the_coarsest_scales_and_checks_feature_shapes():
    model = tiny_uflow(n_scales=3)
    assert model.first_scale == 0 and len(model.flow.input_shapes) == 3
    features = model.extract(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="expected 3 feature maps"):
        model(features[1:])
    with pytest.raises(ValueError, match="feature map 1"):
        model([features[0], features[1][:, :2], features[2]])
    with pytest.raises(ValueError, match="only 3 outputs"):
        tiny_uflow(n_scales=4)
    with pytest.raises(ValueError, match="image_size"):
        UFlow(TinyExtractor(), UFlowConfig())  # 448 vs 32


def test_train_setup_adam_and_linear_decay_to_0_4():
    model = tiny_uflow(lr=1e-3)
    setup = model.train_setup(epochs=5, steps_per_epoch=7)
    assert isinstance(setup.optimizer, torch.optim.Adam)
    group = setup.optimizer.param_groups[0]
    assert group["weight_decay"] == 1e-5
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    assert not any(id(p) in backbone_ids for p in group["params"])
    assert setup.scheduler_interval == "epoch"
    lrs = []
    for _ in range(5):
        lrs.append(setup.optimizer.param_groups[0]["lr"])
        setup.optimizer.step()
        setup.scheduler.step()
    assert np.allclose(lrs, [1e-3, 0.85e-3, 0.7e-3, 0.55e-3, 0.4e-3])


def test_a_few_adam_steps_lower_the_loss():
    model = tiny_uflow(lr=1e-2)
    features = model.extract(torch.rand(4, 3, 32, 32))
    setup = model.train_setup(epochs=1, steps_per_epoch=30)
    first = model.loss(model(features)).item()
    for _ in range(30):
        setup.optimizer.zero_grad()
        loss = model.loss(model(features))
        loss.backward()
        setup.optimizer.step()
    assert loss.item() < first - 1.0


def test_registry_accepts_an_extractor_and_checks_keys():
    torch.manual_seed(0)
    model = create("uflow", backbone=TinyExtractor(), image_size=32, epochs=3, lr=5e-4)
    assert isinstance(model, UFlow) and model.config.epochs == 3 and model.config.lr == 5e-4
    maps = model.predict(torch.rand(2, 3, 32, 32))
    assert maps["map"].shape == (2, 32, 32) and maps["score"].shape == (2,)
    assert create("uflow", backbone=TinyExtractor()).config.image_size == 32  # the extractor's
    with pytest.raises(ValueError, match="differs from the given extractor"):
        create("uflow", backbone=TinyExtractor(), image_size=64)
    with pytest.raises(KeyError, match="unknown parameter"):
        create("uflow", backbone=TinyExtractor(), image_size=32, learning_rate=1e-3)
    with pytest.raises(ValueError, match="nfa_tail"):
        UFlowConfig(nfa_tail="gaussian")


def test_registry_builds_the_paper_set_up_from_the_ms_cait_spec():
    backbones = pytest.importorskip("uadflows.backbones")
    if not hasattr(backbones, "create_extractor"):
        pytest.skip("uadflows.backbones.create_extractor is not written yet")
    model = create("uflow", backbone="ms_cait", pretrained=False, build_backbone=False, flow_steps=1)
    assert model.config.image_size == 448
    assert model.flow.input_shapes == [(768, 28, 28), (384, 14, 14)]
    assert model.flow.output_shapes == [(816, 28, 28), (192, 14, 14)]


def test_registry_with_efficientnet_lite0_on_cpu():
    backbones = pytest.importorskip("uadflows.backbones")
    if not hasattr(backbones, "create_extractor"):
        pytest.skip("uadflows.backbones.create_extractor is not written yet")
    model = create("uflow", backbone="tf_efficientnet_lite0", pretrained=False, image_size=64)
    spec = model.backbone.spec
    assert model.flow.input_shapes[-1][1:] == tuple(spec.shapes[-1])
    maps = model.predict(torch.rand(2, 3, 64, 64))
    assert maps["map"].shape == (2, 64, 64) and maps["log_nfa"].shape == (2, 64, 64)


def test_cnn_features_get_the_official_trainable_layernorm_on_every_stage():
    """mtailanian/uflow src/feature_extraction.py:36-53: CNN stages 1-3 (strides 4/8/16),
    each through a trainable LayerNorm([C, H, W]); MS-CaiT: none (its blocks end in a norm)."""
    cnn = create("uflow", backbone="resnet18", pretrained=False, build_backbone=False, image_size=64, flow_steps=1)
    assert cnn.first_scale == 0 and cnn.flow.input_shapes == [(64, 16, 16), (128, 8, 8), (256, 4, 4)]
    assert [list(n.normalized_shape) for n in cnn.norms] == [[64, 16, 16], [128, 8, 8], [256, 4, 4]]
    trainable = {id(p) for p in cnn.trainable_parameters()}
    assert all(id(p) in trainable for p in cnn.norms.parameters())
    # The flow sees normalised features: per sample, zero mean and unit variance per scale.
    features = [torch.randn(2, *shape) * 7 + 3 for shape in cnn.flow.input_shapes]
    for f in cnn._select(features):
        flat = f.flatten(1)
        assert torch.allclose(flat.mean(1), torch.zeros(2), atol=1e-5)
        assert torch.allclose(flat.var(1, unbiased=False), torch.ones(2), atol=1e-3)
    vit = create("uflow", backbone="ms_cait", pretrained=False, build_backbone=False, flow_steps=1)
    assert vit.norms is None
    forced = create("uflow", backbone="resnet18", pretrained=False, build_backbone=False, image_size=64,
                    flow_steps=1, layernorm=False, n_scales=2)
    assert forced.norms is None and forced.first_scale == 1
    with pytest.raises(ValueError, match="layernorm"):
        UFlowConfig(layernorm="yes")


# ---- the a-contrario NFA --------------------------------------------------------------------
def test_number_of_tests_is_the_polyomino_count():
    direct = sum(n * sum(nfa.POLYOMINO_ALPHA * nfa.POLYOMINO_BETA**k / k for k in range(1, n + 1)) for n in (16, 4))
    assert math.isclose(log10_number_of_tests([16, 4]), math.log10(direct), rel_tol=1e-12)
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    big = sum(
        n * sum(mpmath.mpf(nfa.POLYOMINO_ALPHA) * mpmath.mpf(nfa.POLYOMINO_BETA) ** k / k for k in range(1, n + 1))
        for n in (784, 196)
    )
    assert math.isclose(log10_number_of_tests([784, 196]), float(mpmath.log10(big)), rel_tol=1e-10)
    with pytest.raises(ValueError, match="positive integers"):
        log10_number_of_tests([0])


def test_pixel_tail_exact_and_clamped_chernoff_bound():
    x = np.array([0.0, 5.0, 16.0, 30.0, 80.0, 400.0])
    exact = log10_pixel_tail(x, 16, "exact")
    assert np.allclose(exact, np.log10(chi2.sf(x[:-1], 16)).tolist() + [chi2.logsf(400.0, 16) / math.log(10)])
    bound = log10_pixel_tail(x, 16, "chernoff")
    assert np.all(bound[:3] == 0)  # no bound below the mean: P <= 1
    assert np.all(bound >= exact - 1e-12)  # an upper bound on the probability
    assert bound[-1] < -50


def test_kept_regions_are_level_set_components_with_their_probability():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(4, 10, 10))
    z[:, 2:5, 2:5] += 2.5
    z[:, 6:9, 6:9] += 2.0
    log_prob = region_log10_prob_map(z, "exact")
    score = (z**2).mean(0)
    values = [v for v in np.unique(log_prob) if v != 0]
    assert values, "the shifted squares must give kept regions"
    for v in values:
        region = log_prob == v
        level = score[region].min()
        labels, _ = ndimage.label(score >= level)  # 4-connectivity, as the max-tree
        assert np.array_equal(labels == labels[region][0], region)
        expected = region.sum() * chi2.logsf(4 * level, 4) / math.log(10)
        assert math.isclose(v, expected, rel_tol=1e-9)


def _literal_tree_reduction(score: np.ndarray, channels: int) -> np.ndarray:
    """The paper's selection, done the slow way: components of every upper level set by
    ``ndimage.label``, then prune (each single-child chain from a leaf keeps its most
    significant node) and merge (a bifurcation whose children are all leaves replaces them
    when at least as significant) repeated until nothing merges."""
    regions: dict[frozenset, float] = {}  # pixel set -> its level (lowest score inside)
    for t in np.unique(score):
        labels, n = ndimage.label(score >= t)
        for k in range(1, n + 1):
            pixels = np.flatnonzero(labels == k)
            regions[frozenset(pixels)] = score.ravel()[pixels].min()
    nodes = list(regions)
    parent = {}
    for r in nodes:
        holders = [q for q in nodes if r < q]
        parent[r] = max(holders, key=lambda q: regions[q]) if holders else None
    children = {r: [q for q in nodes if parent[q] == r] for r in nodes}
    lp = {r: len(r) * chi2.logsf(channels * regions[r], channels) / math.log(10) for r in nodes}

    def remove(r):
        p = parent[r]
        for c in children[r]:
            parent[c] = p
            if p is not None:
                children[p].append(c)
        if p is not None:
            children[p].remove(r)
        del parent[r], children[r]

    def branch(leaf):
        chain = [leaf]
        while parent[chain[-1]] is not None and len(children[parent[chain[-1]]]) == 1:
            chain.append(parent[chain[-1]])
        return chain

    def prune():
        for leaf in [r for r in children if not children[r]]:
            chain = branch(leaf)
            keep = chain[int(np.argmin([lp[r] for r in chain]))]
            for r in chain:
                if r != keep:
                    remove(r)

    def merge():
        merged = False
        for b in [r for r in children if len(children[r]) > 1]:
            if b in children and all(not children[c] for c in children[b]):
                if lp[b] <= min(lp[c] for c in children[b]):
                    for c in list(children[b]):
                        remove(c)
                    merged = True
        return merged

    prune()
    while merge():
        prune()
    out = np.zeros(score.size)
    for leaf in [r for r in children if not children[r]]:
        out[list(leaf)] = lp[leaf]
    return out.reshape(score.shape)


@pytest.mark.parametrize("seed", range(6))
def test_fast_reduction_matches_the_literal_algorithm(seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(3, 7, 7))
    z[:, 1:4, 1:3] += 1.5 + seed % 3  # blobs, so that merges and kept children both occur
    z[:, 4:6, 4:7] += 2.0
    expected = _literal_tree_reduction((z**2).mean(0), 3)
    assert np.allclose(region_log10_prob_map(z, "exact"), expected, rtol=1e-9, atol=1e-12)


def test_reduction_keeps_separate_peaks_and_merges_a_plateau():
    # Two strong peaks separated by a normal valley stay two regions ...
    z = np.ones((1, 1, 7)) * 0.5
    z[0, 0, [1, 5]] = 6.0
    z[0, 0, 2] = 5.5
    two = region_log10_prob_map(z, "exact")[0]
    assert two[3] == 0 and two[1] < 0 and two[5] < 0 and two[1] != two[5]
    # ... while a plateau with one slightly higher pixel is kept whole (the parent wins).
    z = np.ones((1, 1, 7)) * 0.5
    z[0, 0, 1:6] = 5.0
    z[0, 0, 3] = 5.01
    plateau = region_log10_prob_map(z, "exact")[0]
    assert len(set(plateau[1:6])) == 1 and plateau[1] < 0 and plateau[0] == 0 and plateau[6] == 0


def _false_detections(neg_log_nfa: torch.Tensor) -> list[int]:
    return [ndimage.label(m.numpy() > 0)[1] for m in neg_log_nfa]


def null_latents(n_images: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n_images, 16, 16, 16, generator=g), torch.randn(n_images, 16, 8, 8, generator=g)]


@pytest.mark.parametrize("tail", ["chernoff", "exact"])
def test_at_most_one_false_detection_per_normal_image(tail):
    z = null_latents(200, seed=11)  # what a perfect flow gives for 200 normal images
    detections = _false_detections(log_nfa_map(z, (32, 32), tail=tail))
    assert np.mean(detections) <= 1.0
    # The same check fails without the multiple-testing correction (N_T = 1) ...
    first_50 = [zs[:50] for zs in z]
    uncorrected = _false_detections(log_nfa_map(first_50, (32, 32), tail=tail, log10_n_tests=0.0))
    assert np.mean(uncorrected) > 0.5


@pytest.mark.parametrize("tail", ["chernoff", "exact"])
def test_injected_shifted_square_is_detected(tail):
    z = null_latents(4, seed=13)
    z[0][:, :, 4:8, 4:8] += 3.0  # fine scale: a 4x4 square of latents with mean 3
    # coarse scale: a 2x2 square needs a larger shift, since N_T (10^155 here) is dominated by
    # the fine scale's polyominoes
    z[1][:, :, 1:3, 5:7] += 5.0
    neg_log_nfa = log_nfa_map(z, (16, 16), tail=tail)
    truth = torch.zeros(16, 16, dtype=torch.bool)
    truth[4:8, 4:8] = True
    truth[2:6, 10:14] = True
    for m in neg_log_nfa:
        detected = m > 0
        iou = (detected & truth).sum() / (detected | truth).sum()
        assert iou > 0.6, iou
        assert len(_false_detections(m[None])) == 1 and _false_detections(m[None])[0] == 2
