"""MSFlow: invertibility, exact log-determinant, scores, schedule, one training step, and
numpy re-derivations of the official pooling, positional encoding, fusion flow and maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from uadflows.backbones.base import Extractor, ExtractorSpec
from uadflows.methods import create
from uadflows.methods.msflow import MSFlow, MSFlowConfig
from uadflows.methods.msflow.parallel import positional_encoding_2d
from uadflows.methods.msflow.anomaly_map import msflow_anomaly_maps


class TinyExtractor(Extractor):
    """Three random strided convs: strides 4/8/16 like stages 1-3, tiny channel counts."""

    def __init__(self, channels=(4, 4, 8), image_size: int = 64):
        super().__init__()
        self.spec = ExtractorSpec(
            name="tiny",
            image_size=(image_size, image_size),
            channels=tuple(channels),
            shapes=tuple((image_size // s, image_size // s) for s in (4, 8, 16)),
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            weights="random",
            layers="tiny convs",
        )
        self.stages = nn.ModuleList(
            [
                nn.Conv2d(3, channels[0], 4, stride=4),
                nn.Conv2d(channels[0], channels[1], 2, stride=2),
                nn.Conv2d(channels[1], channels[2], 2, stride=2),
            ]
        )

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        maps, x = [], images
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps


def tiny_msflow(image_size: int = 64, seed: int = 0, **params) -> MSFlow:
    torch.manual_seed(seed)
    np.random.seed(seed)  # FrEIA draws its fixed permutations from numpy
    params.setdefault("cond_channels", 8)
    return create("msflow", backbone=TinyExtractor(image_size=image_size), **params)


def perturb(model: nn.Module, scale: float = 0.1) -> None:
    """Move every trainable weight off its initial value so couplings are far from identity."""
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(scale * torch.randn_like(p))


def raw_features(channels=(4, 4, 8), side: int = 16, batch: int = 2, dtype=torch.float32):
    """Random stage maps at strides 1x, 2x, 4x coarser, as the cache holds them."""
    return [torch.randn(batch, c, side >> i, side >> i, dtype=dtype) for i, c in enumerate(channels)]


def test_inverse_recovers_pooled_features():
    model = tiny_msflow(seed=1).eval()
    perturb(model)
    features = raw_features(side=16)
    with torch.no_grad():
        out = model(features)
        recovered = model.inverse(out.z)
    pooled = model.pool_features(features)
    assert [z.shape for z in out.z] == [p.shape for p in pooled]
    for x, x_back in zip(pooled, recovered):
        assert (x - x_back).abs().max().item() < 1e-4


def test_log_jac_equals_bruteforce_jacobian():
    model = tiny_msflow(seed=2).double().eval()
    perturb(model, 0.2)
    pooled = model.pool_features(raw_features(side=16, batch=2, dtype=torch.float64))
    shapes = [p.shape[1:] for p in pooled]
    sizes = [s.numel() for s in shapes]  # 4*8*8 + 4*4*4 + 8*2*2 = 352 dimensions
    out = model.transform(pooled)
    total_log_jac = sum(out.log_jac)
    for b in range(2):

        def flat_flow(v: torch.Tensor) -> torch.Tensor:
            xs = [part.reshape(1, *s) for part, s in zip(torch.split(v, sizes), shapes)]
            return torch.cat([z.flatten() for z in model.transform(xs, with_log_jac=False).z])

        v = torch.cat([p[b].flatten() for p in pooled])
        jacobian = torch.autograd.functional.jacobian(flat_flow, v, vectorize=True)
        sign, log_abs_det = torch.linalg.slogdet(jacobian)
        assert sign.item() == 1.0
        assert abs(log_abs_det.item()) > 0.1  # the test means something only off identity
        assert total_log_jac[b].item() == pytest.approx(log_abs_det.item(), abs=1e-6)


def test_shapes_and_scores_on_tiny_images():
    model = tiny_msflow().eval()
    images = torch.rand(3, 3, 64, 64)
    features = model.extract(images)
    out = model(features)
    assert [tuple(z.shape) for z in out.z] == [(3, 4, 8, 8), (3, 4, 4, 4), (3, 8, 2, 2)]
    assert [tuple(j.shape) for j in out.log_jac] == [(3,)] * 3
    result = model.predict(images)
    assert set(result) >= {"map", "score", "map_mul", "score_max"}
    assert result["map"].shape == (3, 64, 64) and result["map_mul"].shape == (3, 64, 64)
    assert result["score"].shape == (3,) and result["score_max"].shape == (3,)
    assert all(torch.isfinite(v).all() for v in result.values())
    # Per-image normalisation: the most normal pixel of every image scores 0.
    assert torch.allclose(result["map"].flatten(1).amin(1), torch.zeros(3), atol=1e-6)
    assert torch.allclose(result["score_max"], result["map"].flatten(1).amax(1))
    assert model(features, with_log_jac=False).log_jac is None


def test_maps_rise_on_an_anomalous_region_and_ignore_the_batch():
    z = [torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 4, 4), torch.zeros(2, 8, 2, 2)]
    z[0][1, :, 6, 1] = 5.0  # image 1: one unlikely latent pixel near the bottom-left
    maps = msflow_anomaly_maps(z, (64, 64))
    assert maps["map"][0].abs().max() < 1e-6 and maps["score"][0].abs() < 1e-6
    peak = divmod(int(maps["map"][1].argmax()), 64)
    assert peak == (6 * 9, 1 * 9)  # align_corners=True: latent (6, 1) lands on pixel (54, 9)
    assert maps["score"][1] > 0.1 and maps["score_max"][1] > 0.5
    alone = msflow_anomaly_maps([zs[1:] for zs in z], (64, 64))
    for key in ("map", "map_mul", "score", "score_max"):
        assert torch.allclose(alone[key][0], maps[key][1])


@pytest.mark.parametrize("anomalous_pixels, expected_score", [(6, 0.5), (30, 1.0)])
def test_image_score_is_the_mean_of_the_top_3_percent(anomalous_pixels, expected_score):
    z = torch.zeros(1, 2, 20, 20)  # one scale at output size: no interpolation
    z.view(1, 2, -1)[0, :, :anomalous_pixels] = 10.0  # log p = -50 there: probability ~ 0
    maps = msflow_anomaly_maps([z], (20, 20), top_k=0.03)  # top 12 of 400 pixels
    assert maps["score"].item() == pytest.approx(expected_score, abs=1e-6)


def test_one_training_step_lowers_the_loss():
    model = tiny_msflow(seed=3).train()
    features = raw_features(side=16, batch=4)
    setup = model.train_setup(epochs=100, steps_per_epoch=1)
    assert setup.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)  # warm-up start
    loss_before = model.loss(model(features))
    setup.optimizer.zero_grad()
    loss_before.backward()
    torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), setup.grad_clip)
    setup.optimizer.step()
    with torch.no_grad():
        loss_after = model.loss(model(features))
    assert loss_after.item() < loss_before.item()
    assert all(p.grad is None for p in model.backbone.parameters())


def test_loss_is_the_per_image_negative_log_likelihood():
    model = tiny_msflow(seed=4).eval()
    features = raw_features(side=16, batch=3)
    out = model(features)
    per_image = [
        sum(0.5 * (z[b] ** 2).sum() for z in out.z) - sum(j[b] for j in out.log_jac)
        for b in range(3)
    ]
    assert model.loss(out).item() == pytest.approx(torch.stack(per_image).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="with_log_jac=True"):
        model.loss(model(features, with_log_jac=False))


@pytest.mark.parametrize(
    "epochs, expected",
    [
        # the paper: 25 meta x 4 sub-epochs, warm-up over 12 sub-epochs, decay at 70 and 90
        (100, {0: 1e-5, 6: 5.5e-5, 12: 1e-4, 69: 1e-4, 70: 3.3e-5, 89: 3.3e-5, 90: 1.089e-5, 99: 1.089e-5}),
        # 20 epochs: warm-up round(2.4) = 2, milestones round(14.0) = 14, round(18.0) = 18
        (20, {0: 1e-5, 1: 5.5e-5, 2: 1e-4, 13: 1e-4, 14: 3.3e-5, 18: 1.089e-5, 19: 1.089e-5}),
    ],
)
def test_schedule_maps_meta_epochs_onto_epochs(epochs, expected):
    model = tiny_msflow()
    setup = model.train_setup(epochs=epochs, steps_per_epoch=5)
    assert isinstance(setup.optimizer, torch.optim.Adam)
    assert setup.grad_clip == 2.0 and setup.scheduler_interval == "epoch"
    trained = {id(p) for g in setup.optimizer.param_groups for p in g["params"]}
    assert trained == {id(p) for p in model.trainable_parameters()}
    assert not trained & {id(p) for p in model.backbone.parameters()}
    lrs = []
    for _ in range(epochs):
        lrs.append(setup.optimizer.param_groups[0]["lr"])
        setup.optimizer.step()
        setup.scheduler.step()
    for epoch, lr in expected.items():
        assert lrs[epoch] == pytest.approx(lr, rel=1e-9), f"epoch {epoch}"


def test_config_defaults_are_the_paper_recipe():
    config = MSFlowConfig()
    assert (config.batch_size, config.epochs, config.lr, config.image_size) == (8, 100, 1e-4, 512)
    assert (config.clamp, config.blocks_per_scale, config.cond_channels) == (1.9, (2, 5, 8), 64)
    assert config.amp is False and config.top_k == 0.03
    model = tiny_msflow(blocks_per_scale=[1, 2, 3])
    assert [len(flow.module_list) for flow in model.parallel_flows] == [1, 2, 3]
    assert model.config.image_size == (64, 64)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="cond_channels"):
        MSFlowConfig(cond_channels=6)
    with pytest.raises(TypeError, match="no_such_key"):
        tiny_msflow(no_such_key=1)
    with pytest.raises(ValueError, match="blocks_per_scale"):
        tiny_msflow(blocks_per_scale=(2, 5))
    with pytest.raises(ValueError, match="image_size"):
        create("msflow", backbone=TinyExtractor(image_size=64), image_size=128)
    model = tiny_msflow()
    with pytest.raises(ValueError, match="3 feature maps"):
        model(raw_features()[:2])
    with pytest.raises(ValueError, match="feature map 1"):
        model([torch.randn(1, 4, 16, 16), torch.randn(1, 5, 8, 8), torch.randn(1, 8, 4, 4)])


def test_positional_encoding_is_sin_cos_of_x_then_y():
    code = positional_encoding_2d(8, 3, 5)
    assert code.shape == (8, 3, 5)
    xs = torch.arange(5.0)
    ys = torch.arange(3.0)
    # half = 4 channels per axis, frequencies 1 and 1e4^(-2/4) = 0.01
    assert torch.allclose(code[0], torch.sin(xs).expand(3, 5), atol=1e-6)
    assert torch.allclose(code[3], torch.cos(0.01 * xs).expand(3, 5), atol=1e-6)
    assert torch.allclose(code[4], torch.sin(ys)[:, None].expand(3, 5), atol=1e-6)
    assert torch.allclose(code[7], torch.cos(0.01 * ys)[:, None].expand(3, 5), atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="mixed precision runs on CUDA only")
def test_amp_training_step_on_gpu():
    model = tiny_msflow(amp=True).cuda().train()
    features = [f.cuda() for f in raw_features(batch=2)]
    out = model(features)
    assert all(z.dtype == torch.float32 for z in out.z)
    loss = model.loss(out)
    assert torch.isfinite(loss)
    scaler = torch.amp.GradScaler("cuda")
    scaler.scale(loss).backward()
    assert any(p.grad is not None for p in model.trainable_parameters())


def test_registry_with_a_real_backbone_setup():
    backbones = pytest.importorskip("uadflows.backbones")
    if not hasattr(backbones, "create_extractor"):
        pytest.skip("uadflows.backbones.create_extractor is not written yet")
    torch.manual_seed(0)
    model = create("msflow", backbone="resnet18", pretrained=False, image_size=64).eval()
    assert model.config.image_size == (64, 64)
    result = model.predict(torch.rand(2, 3, 64, 64))
    assert result["map"].shape == (2, 64, 64) and result["score"].shape == (2,)
    assert torch.isfinite(result["map"]).all()


def test_factory_passes_the_backbone_arguments_on(monkeypatch, tmp_path):
    """The factory's hand-over to uadflows.backbones, with a stand-in create_extractor."""
    import uadflows.backbones as backbones

    calls = []

    def fake_create_extractor(name, *, image_size=None, pretrained=True, weights_file=None, cache_dir=None):
        calls.append((name, image_size, pretrained, weights_file, cache_dir))
        return TinyExtractor(image_size=image_size if isinstance(image_size, int) else image_size[0])

    monkeypatch.setattr(backbones, "create_extractor", fake_create_extractor, raising=False)
    weights = tmp_path / "wrn.pth"
    model = create("msflow", backbone="wide_resnet50_2", pretrained=weights, cond_channels=8)
    assert calls[-1] == ("wide_resnet50_2", 512, True, weights, None)
    assert model.config.image_size == (512, 512)
    create("msflow", backbone="resnet18", pretrained=False, image_size=64, cache_dir=tmp_path)
    assert calls[-1] == ("resnet18", 64, False, None, tmp_path)


def test_maps_and_score_follow_the_official_post_processing_on_fixed_latents():
    """Re-derived in numpy from cool-xuan/msflow (train.py:113, log p = -0.5 mean_c z^2 per
    scale; post_process.py: "add" = per-scale exp(log p - max) upsampled (bilinear,
    align_corners) and summed, anomaly = max - it; "mul" = summed upsampled log p, minus its
    max, exp, anomaly = max - it; score = mean of the top int(H W 0.03) "mul" pixels)."""
    from scipy.ndimage import map_coordinates

    from uadflows.methods.msflow.anomaly_map import msflow_anomaly_maps

    gen = torch.Generator().manual_seed(3)
    z = [torch.randn(2, 4, 8, 8, generator=gen) * 1.5, torch.randn(2, 6, 4, 4, generator=gen)]
    size = (16, 16)

    def upsample(m):  # bilinear with align_corners=True: corner pixels map onto corners
        h, w = m.shape
        rows = np.linspace(0, h - 1, size[0])
        cols = np.linspace(0, w - 1, size[1])
        return map_coordinates(m, np.meshgrid(rows, cols, indexing="ij"), order=1)

    got = msflow_anomaly_maps(z, size)
    for b in range(2):
        logps = [-0.5 * (zs[b].double().numpy() ** 2).mean(0) for zs in z]
        add = sum(upsample(np.exp(lp - lp.max())) for lp in logps)
        mul_log = sum(upsample(lp) for lp in logps)
        mul = np.exp(mul_log - mul_log.max())
        map_add, map_mul = add.max() - add, mul.max() - mul
        top = np.sort(map_mul.ravel())[::-1][: int(16 * 16 * 0.03)]
        np.testing.assert_allclose(got["map"][b].numpy(), map_add, atol=1e-5)
        np.testing.assert_allclose(got["map_mul"][b].numpy(), map_mul, atol=1e-5)
        np.testing.assert_allclose(float(got["score"][b]), top.mean(), atol=1e-6)


# ---- numpy re-derivations of the official code (cool-xuan/msflow at HEAD) --------------
# Each test recomputes one stage from the behaviour the official code documents, on fixed
# tensors, and compares it with ours: pooling (train.py:20-34), positional encoding
# (utils.py:8-27), fusion flow (models/flow_models.py:59-60, models/freia_utils.py).


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _avg_pool_3_2_1(x: np.ndarray) -> np.ndarray:
    """(C, H, W): mean over 3x3 windows at stride 2, zero padding 1 counted in the divisor
    (nn.AvgPool2d(3, 2, 1)'s defaults, count_include_pad=True)."""
    c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    oh, ow = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    return np.stack([[[padded[k, 2 * i:2 * i + 3, 2 * j:2 * j + 3].sum() / 9 for j in range(ow)]
                      for i in range(oh)] for k in range(c)])


def test_every_scale_is_average_pooled_3x3_stride_2_pad_1():
    """train.py:20-34: one AvgPool2d(3, 2, 1) for every stage (pool_type 'avg', default.py),
    before the parallel flows; odd sizes round up (7 -> 4)."""
    model = tiny_msflow()
    gen = torch.Generator().manual_seed(5)
    feats = [torch.randn(2, 4, 16, 16, generator=gen), torch.randn(2, 4, 7, 7, generator=gen),
             torch.randn(2, 8, 4, 4, generator=gen)]
    pooled = model.pool_features(feats)
    assert [tuple(p.shape[-2:]) for p in pooled] == [(8, 8), (4, 4), (2, 2)]
    for f, p in zip(feats, pooled):
        for b in range(2):
            np.testing.assert_allclose(_np(p[b]), _avg_pool_3_2_1(_np(f[b])), atol=1e-6)


def test_positional_encoding_every_channel_and_the_condition_of_each_scale():
    """utils.py:8-27: D channels, half = D/2 per axis, frequency of channel pair i
    exp(-2i ln(1e4) / half); channels [0, half) encode the column x (sin on even, cos on
    odd), [half, D) the row y; every scale's flow gets the code at its pooled size
    (train.py:32-34), the same for every image of the batch."""
    d, h, w = 16, 3, 5
    half = d // 2
    freq = np.exp(-np.arange(0, half, 2) * np.log(1e4) / half)  # (half/2,)
    expected = np.zeros((d, h, w))
    x, y = np.arange(w)[None, None, :], np.arange(h)[None, :, None]
    expected[0:half:2] = np.sin(freq[:, None, None] * x) + 0 * y
    expected[1:half:2] = np.cos(freq[:, None, None] * x) + 0 * y
    expected[half::2] = np.sin(freq[:, None, None] * y) + 0 * x
    expected[half + 1::2] = np.cos(freq[:, None, None] * y) + 0 * x
    np.testing.assert_allclose(_np(positional_encoding_2d(d, h, w)), expected, atol=1e-7)

    model = tiny_msflow(cond_channels=16)
    for pooled in model.pool_features(raw_features(side=12, batch=3)):
        cond = model._conditions(pooled)
        _, _, ph, pw = pooled.shape
        assert cond.shape == (3, 16, ph, pw)
        for b in range(3):
            np.testing.assert_allclose(_np(cond[b]), _np(positional_encoding_2d(16, ph, pw)), atol=1e-6)


def _conv3x3(x: np.ndarray, conv: nn.Conv2d) -> np.ndarray:
    """(C, H, W) -> (O, H, W), stride 1, zero padding 1, as a plain sum over windows."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))  # C,H,W,3,3
    return np.einsum("chwij,ocij->ohw", windows, _np(conv.weight)) + _np(conv.bias)[:, None, None]


def _bilinear_corners(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, h, w) -> (C, H, W) bilinear with align_corners=True."""
    from scipy.ndimage import map_coordinates

    rows, cols = np.linspace(0, m.shape[1] - 1, size[0]), np.linspace(0, m.shape[2] - 1, size[1])
    grid = np.meshgrid(rows, cols, indexing="ij")
    return np.stack([map_coordinates(c, grid, order=1) for c in m])


def _cross_scale_net(xs: list[np.ndarray], net) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """freia_utils.py FusionNet + FusionSTNets on one image: every scale average-pooled to
    the smallest map, concatenated, conv3x3 -> LayerNorm over channels -> ReLU -> conv3x3 ->
    ReLU, split back per scale, upsampled (bilinear, align_corners) and added to the scale's
    input; then one conv3x3 per scale for the log-scale s and one for the shift t."""
    mixer = net.mixer
    sh, sw = xs[-1].shape[1:]
    pooled = [x.reshape(x.shape[0], sh, x.shape[1] // sh, sw, x.shape[2] // sw).mean(axis=(2, 4)) for x in xs]
    hidden = _conv3x3(np.concatenate(pooled), mixer.conv1)
    mean, var = hidden.mean(0, keepdims=True), hidden.var(0, keepdims=True)
    hidden = (hidden - mean) / np.sqrt(var + mixer.norm.eps)
    hidden = hidden * _np(mixer.norm.weight)[:, None, None] + _np(mixer.norm.bias)[:, None, None]
    mixed = np.maximum(_conv3x3(np.maximum(hidden, 0), mixer.conv2), 0)
    shares = np.split(mixed, np.cumsum([x.shape[0] for x in xs])[:-1])
    out = [x + _bilinear_corners(s, x.shape[1:]) for x, s in zip(xs, shares)]
    return ([_conv3x3(o, c) for o, c in zip(out, net.to_scale)],
            [_conv3x3(o, c) for o, c in zip(out, net.to_shift)])


def test_fusion_flow_equals_the_official_coupling_rederived_in_numpy():
    """models/flow_models.py:59-60: a fixed random channel permutation per scale, then one
    FusionCouplingLayer (clamp 1.9, default.py): each scale split into a = first C//2
    channels and b; a' = a exp(g(s)) + t with (s, t) from every scale's b; b' = b exp(g(s'))
    + t' with (s', t') from every scale's a'; g(s) = clamp 0.636 atan(s / clamp)
    (freia_utils.py:102); the log-det is the sum of g over both halves (freia_utils.py:178),
    per scale here, summed by the official."""
    model = tiny_msflow(seed=4)
    perturb(model, 0.2)
    fusion = model.fusion_flow
    gen = torch.Generator().manual_seed(6)
    xs = [torch.randn(2, c, s, s, generator=gen) for c, s in zip((4, 4, 8), (8, 4, 2))]
    with torch.no_grad():
        got, got_jac = fusion(xs)
    clamp = model.config.clamp
    assert clamp == 1.9

    def g(s):
        return clamp * 0.636 * np.arctan(s / clamp)

    for b in range(2):
        permuted = [_np(x[b])[perm.perm.numpy()] for x, perm in zip(xs, fusion.permutations)]
        firsts = [x[: x.shape[0] // 2] for x in permuted]
        seconds = [x[x.shape[0] // 2:] for x in permuted]
        s_b, t_b = _cross_scale_net(seconds, fusion.coupling.net_from_second)
        firsts = [a * np.exp(g(s)) + t for a, s, t in zip(firsts, s_b, t_b)]
        s_a, t_a = _cross_scale_net(firsts, fusion.coupling.net_from_first)
        seconds = [x * np.exp(g(s)) + t for x, s, t in zip(seconds, s_a, t_a)]
        for i in range(3):
            np.testing.assert_allclose(_np(got[i][b]), np.concatenate([firsts[i], seconds[i]]),
                                       rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(float(got_jac[i][b]), g(s_a[i]).sum() + g(s_b[i]).sum(),
                                       rtol=1e-4, atol=1e-4)
