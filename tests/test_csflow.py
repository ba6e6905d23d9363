"""CS-Flow: the multi-scale extractor, invertibility, exact log-determinant, the official
loss and score, one training step, the parameter count of the paper's set-up, detection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from uadflows.backbones.base import SpecOnlyExtractor
from uadflows.methods import create
from uadflows.methods.csflow import CSFlow, CSFlowConfig, CrossScaleFlow, csflow_anomaly_maps


def spec_extractor(channels: int = 6, side: int = 8, n_scales: int = 3) -> SpecOnlyExtractor:
    """A stand-in with a cs_effnet-like spec: equal channels, sides halving."""
    from uadflows.backbones.base import ExtractorSpec

    return SpecOnlyExtractor(ExtractorSpec(
        name="tiny_pyramid", image_size=(side * 32, side * 32), channels=(channels,) * n_scales,
        shapes=tuple((side >> s, side >> s) for s in range(n_scales)), mean=(0.5,) * 3, std=(0.5,) * 3,
        weights="random", layers="tiny",
    ))


def tiny_csflow(channels: int = 6, side: int = 8, seed: int = 0, **params) -> CSFlow:
    torch.manual_seed(seed)
    params.setdefault("hidden_channels", 8)
    return create("csflow", backbone=spec_extractor(channels, side), **params)


def features(channels: int = 6, side: int = 8, batch: int = 2, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, side >> s, side >> s, generator=g, dtype=dtype) for s in range(3)]


def activate(model: CSFlow, gamma: float = 0.5) -> CSFlow:
    """Every subnet's gamma starts at 0 (each block the identity): open them for the checks."""
    with torch.no_grad():
        for name, p in model.flow.named_parameters():
            if name.endswith("gamma"):
                p.fill_(gamma)
    return model


def test_config_defaults_are_the_official_recipe():
    c = CSFlowConfig()  # cs-flow config.py:13-41, train.py:12
    assert (c.batch_size, c.epochs, c.lr, c.image_size) == (16, 4 * 60, 2e-4, 768)
    assert (c.n_blocks, c.kernel_sizes, c.hidden_channels, c.clamp) == (4, (3, 3, 3, 5), 1024, 3.0)
    assert (c.adam_eps, c.weight_decay, c.grad_clip, c.leaky_slope, c.use_gamma) == (1e-4, 1e-5, 1.0, 0.1, True)


def test_shapes_latents_match_features_and_maps_match_size():
    model = tiny_csflow()
    feats = features(batch=3)
    out = model(feats)
    assert [tuple(z.shape) for z in out.z] == [tuple(f.shape) for f in feats]
    assert [tuple(j.shape) for j in out.log_jac] == [(3,)] * 3
    maps = model.anomaly_maps(model(feats, with_log_jac=False), (40, 48))
    assert maps["map"].shape == (3, 40, 48) and maps["score"].shape == (3,)


def test_inverse_recovers_the_features():
    model = activate(tiny_csflow(seed=1), 0.7).double()
    feats = features(dtype=torch.float64)
    z = model(feats).z
    assert max((a - b).abs().max().item() for a, b in zip(z, feats)) > 0.1  # not the identity
    back = model.inverse(z)
    for a, b in zip(back, feats):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


def test_log_jac_equals_bruteforce_jacobian():
    model = activate(tiny_csflow(channels=4, side=4, seed=2), 0.8).double()
    feats = features(channels=4, side=4, batch=1, dtype=torch.float64, seed=3)
    sizes = [f.numel() for f in feats]

    def flat_flow(x: torch.Tensor) -> torch.Tensor:
        parts = [p.view(f.shape) for p, f in zip(x.split(sizes), feats)]
        return torch.cat([z.flatten() for z in model(parts).z])

    x = torch.cat([f.flatten() for f in feats])  # 4 * (16 + 4 + 1) = 84 dimensions
    jac = torch.autograd.functional.jacobian(flat_flow, x, vectorize=True)
    sign, logdet = torch.linalg.slogdet(jac)
    assert sign.item() == 1.0
    total = sum(model(feats).log_jac).item()
    assert abs(total) > 1.0  # the scales are not all one
    assert total == pytest.approx(logdet.item(), abs=1e-8)


def test_permutations_are_the_originals_seeded_draws():
    flow = CrossScaleFlow(3, 10, 4, (3, 3), 3.0)
    for k in range(2):
        np.random.seed(k)  # cs-flow freia_funcs.py:122-133: seed, then one draw per scale
        expected = [np.random.permutation(10) for _ in range(3)]
        assert getattr(flow, f"perm_{k}").tolist() == [e.tolist() for e in expected]


def test_loss_and_score_are_the_official_formulas():
    model = activate(tiny_csflow(seed=4)).eval()
    out = model(features(batch=3))
    z = torch.cat([zs.flatten(1) for zs in out.z], 1)
    dims = z.shape[1]
    assert dims == 6 * (64 + 16 + 4)
    # cs-flow utils.py:26-29 (loss), train.py:67-68 (score)
    expected = torch.mean(0.5 * torch.sum(z**2, dim=1) - sum(out.log_jac)) / dims
    assert model.loss(out).item() == pytest.approx(expected.item(), rel=1e-6)
    score = model.anomaly_maps(out, (32, 32))["score"]
    torch.testing.assert_close(score, (z**2 / 2).mean(1))


def test_map_rises_where_the_latent_is_large_and_ignores_the_batch():
    z = [torch.zeros(2, 4, 8 >> s, 8 >> s) for s in range(3)]
    z[0][0, :, 1, 6] = 3.0  # image 0: one odd position at scale 0, top right
    maps = csflow_anomaly_maps(z, (64, 64))
    m = maps["map"]
    assert m[0, 8:16, 48:56].mean() > 10 * m[0, 48:56, 8:16].mean() + 1e-3
    assert maps["score"][0] > maps["score"][1] == 0
    alone = csflow_anomaly_maps([zs[:1] for zs in z], (64, 64))
    torch.testing.assert_close(alone["map"][0], m[0])


def test_one_training_step_lowers_the_loss():
    model = tiny_csflow(seed=5).train()
    feats = features(batch=4, seed=6)
    feats = [2.0 * f + 1.0 for f in feats]  # off the standard normal: something to learn
    setup = model.train_setup(epochs=1, steps_per_epoch=1)
    group = setup.optimizer.param_groups[0]
    assert (group["lr"], group["eps"], group["weight_decay"], setup.grad_clip) == (2e-4, 1e-4, 1e-5, 1.0)
    before = model.loss(model(feats))
    setup.optimizer.zero_grad()
    before.backward()
    torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), setup.grad_clip)
    setup.optimizer.step()
    with torch.no_grad():
        after = model.loss(model(feats))
    assert after.item() < before.item()


def official_parameter_count(channels: int, hidden: int, kernels) -> int:
    """From cs-flow's construction: per block two CrossConvolutions (freia_funcs.py:171-172)
    of in = C/2, out = C, each 3 input convs, 3 output convs, 2 up and 2 down convs, all with
    bias (batch_norm=False), and 3 gammas (freia_funcs.py:40-78)."""
    total = 0
    for k in kernels:
        c_in, c_out = channels // 2, channels  # C even: split_len1 = split_len2 = C / 2
        net = 3 * (c_in * hidden * k * k + hidden) + 7 * (hidden * c_out * k * k + c_out) + 3
        total += 2 * net
    return total


def test_parameter_count_of_the_paper_set_up():
    assert official_parameter_count(304, 1024, (3, 3, 3, 5)) == 275_227_288
    with torch.device("meta"):  # 275 M parameters: count them without allocating them
        model = create("csflow", backbone="cs_effnet_b5", pretrained=False, build_backbone=False)
    assert model.backbone.spec.channels == (304, 304, 304)
    assert model.backbone.spec.shapes == ((24, 24), (12, 12), (6, 6))
    assert sum(p.numel() for p in model.trainable_parameters()) == 275_227_288


def test_pyramid_extractor_runs_the_stage_on_nearest_halvings():
    from uadflows.backbones import create_extractor, extractor_spec

    big = create_extractor("cs_effnet_lite0", image_size=256)
    small = create_extractor("cs_effnet_lite0", image_size=128)
    assert big.spec.channels == (192,) * 3 and big.spec.shapes == ((8, 8), (4, 4), (2, 2))
    images = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    out = big(images)
    assert [tuple(f.shape) for f in out] == [(2, 192, 8, 8), (2, 192, 4, 4), (2, 192, 2, 2)]
    # scale 1 of a 256 px image is scale 0 of its nearest 128 px copy (every other pixel)
    torch.testing.assert_close(small(images[..., ::2, ::2])[0], out[1])
    torch.testing.assert_close(small(images[..., ::2, ::2])[1], out[2])
    assert out[0].abs().mean() > 0.01
    b5 = extractor_spec("cs_effnet_b5", pretrained=False)
    assert b5.image_size == (768, 768) and b5.shapes == ((24, 24), (12, 12), (6, 6))
    assert "blocks[:6]" in b5.layers and "nearest" in b5.layers
    assert extractor_spec("cs_effnet_b5").weights == "timm:in1k"


def test_bad_inputs_are_named():
    from uadflows.backbones import extractor_spec

    with pytest.raises(ValueError, match=r"image_size \(200, 256\) must be a multiple of 128"):
        extractor_spec("cs_effnet_lite0", image_size=(200, 256))
    with pytest.raises(TypeError, match="unknown parameter.*hidden_chanels"):
        tiny_csflow(hidden_chanels=3)
    with pytest.raises(ValueError, match="kernel_sizes needs one kernel per block"):
        tiny_csflow(kernel_sizes=(3, 5))
    model = tiny_csflow()
    with pytest.raises(ValueError, match="expected a list of 3 feature maps, got 2"):
        model(features()[:2])
    with pytest.raises(ValueError, match=r"feature map 1 has shape \(2, 6, 5, 4\)"):
        model([features()[0], torch.zeros(2, 6, 5, 4), features()[2]])
    from uadflows.backbones.base import ExtractorSpec

    three_stages = ExtractorSpec(name="resnet18", image_size=(64, 64), channels=(64, 128, 256),
                                 shapes=((16, 16), (8, 8), (4, 4)), mean=(0.5,) * 3, std=(0.5,) * 3,
                                 weights="random", layers="x")
    with pytest.raises(ValueError, match="extractor 'resnet18'.*equal channels"):
        create("csflow", backbone=SpecOnlyExtractor(three_stages))


def test_detects_the_defects_of_the_tiny_category(tiny_category, tmp_path):
    from uadflows.features import extract, load_split
    from uadflows.train import optimizer_step

    cache = tmp_path / "features"
    extract(tiny_category["index"], cache, {"name": "cs_effnet_lite0", "image_size": 128, "pretrained": True},
            batch_size=8, device="cpu")
    train = load_split(cache, "train", index_csv=tiny_category["index"])
    test = load_split(cache, "test", index_csv=tiny_category["index"])
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = create("csflow", backbone="cs_effnet_lite0", pretrained=False, image_size=128,
                   build_backbone=False, hidden_channels=32, lr=1e-3)
    setup = model.train_setup(epochs=20, steps_per_epoch=4)
    for epoch in range(20):  # 8 images, batch 2: 80 steps of the official recipe at lr 1e-3
        for _, feats in train.batches(2, np.random.default_rng(epoch).permutation(len(train)), cpu):
            optimizer_step(model, setup, model.loss(model(feats)))
    with torch.no_grad():
        outs = [model.anomaly_maps(model(f, with_log_jac=False), (128, 128)) for _, f in test.batches(8, device=cpu)]
    scores = torch.cat([o["score"] for o in outs]).numpy()
    labels = np.array([s.label for s in test.samples()])
    assert labels.sum() == 4 and outs[0]["map"].shape == (8, 128, 128)
    assert roc_auc_score(labels, scores) >= 0.9  # a sign flip gives <= 0.1
