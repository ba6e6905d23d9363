"""CFlow-AD: shapes, invertibility, exact log-determinant, fiber training, the official
schedule and set-level map, the parameter count of the official WRN50-2 set-up."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_spec
from test_msflow import TinyExtractor, perturb
from uadflows.backbones import extractor_spec
from uadflows.backbones.base import SpecOnlyExtractor
from uadflows.evaluate import evaluate
from uadflows.methods import create
from uadflows.methods.cflow import CFlowConfig
from uadflows.methods.cflow.anomaly_map import cflow_anomaly_maps, log_prob_per_dim
from uadflows.methods.cflow.schedule import lr_factor
from uadflows.score import score
from uadflows.train import train


def tiny_cflow(seed: int = 0, **params):
    torch.manual_seed(seed)
    np.random.seed(seed)  # FrEIA draws its soft permutations from numpy
    params.setdefault("cond_channels", 8)
    params.setdefault("coupling_blocks", 2)
    params.setdefault("fiber_batch", 16)
    return create("cflow", backbone=TinyExtractor(), **params)


def features(batch: int = 2, side: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, side >> i, side >> i, generator=g) for i, c in enumerate((4, 4, 8))]


def test_shapes_and_maps():
    model = tiny_cflow().eval()
    feats = features(batch=3)
    with torch.no_grad():
        out = model(feats)
        maps = model.anomaly_maps(out, (64, 64))
    assert [z.shape for z in out.z] == [f.shape for f in feats]
    assert [j.shape for j in out.log_jac] == [(3,)] * 3
    assert [lp.shape for lp in out.extras["log_prob"]] == [(3, 8, 8), (3, 4, 4), (3, 2, 2)]
    assert maps["map"].shape == (3, 64, 64) and maps["score"].shape == (3,)
    assert maps["log_prob2"].shape == (3, 2, 2) and (maps["map"] >= 0).all()


def test_inverse_recovers_the_features():
    model = tiny_cflow(seed=1).eval()
    perturb(model)
    feats = features()
    with torch.no_grad():
        back = model.inverse(model(feats).z)
    for x, x_back in zip(feats, back):
        assert (x - x_back).abs().max().item() < 1e-4


def test_log_det_equals_bruteforce_jacobian():
    model = tiny_cflow(seed=2).double().eval()
    perturb(model, 0.3)
    feats = [f.double() for f in features(batch=1, side=4)]
    out = model(feats)
    for layer, (feature, decoder) in enumerate(zip(feats, model.decoders)):
        rows, cond = model.fibers(feature)
        for r in range(rows.shape[0]):
            jac = torch.autograd.functional.jacobian(
                lambda x: decoder(x[None], c=[cond[r : r + 1]])[0][0], rows[r])
            _, expected = torch.linalg.slogdet(jac)
            _, got = decoder(rows[r : r + 1], c=[cond[r : r + 1]])
            # 1e-6: the soft permutation is orthogonal to float32 precision only (its log-det counts as 0)
            assert got.item() == pytest.approx(expected.item(), abs=1e-6)
        # the per-sample log-det is the sum over the image's positions
        per_position = decoder(rows, c=[cond])[1]
        assert out.log_jac[layer].item() == pytest.approx(per_position.sum().item(), abs=1e-8)


def test_log_prob_per_dim_is_the_gaussian_log_density_plus_log_det_over_channels():
    z, log_jac = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    gauss = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(dim=1)
    torch.testing.assert_close(log_prob_per_dim(z, log_jac), (gauss + log_jac) / 6)


def test_one_fiber_training_batch_lowers_the_loss():
    model = tiny_cflow(seed=3)
    feats = [f * 3 + 1 for f in features(batch=4, side=8)]
    setup = model.train_setup(epochs=1, steps_per_epoch=1)
    with torch.no_grad():
        before = model.loss(model(feats)).item()
    reported = model.train_batch(feats, setup, torch.Generator().manual_seed(0))
    with torch.no_grad():
        after = model.loss(model(feats)).item()
    assert math.isfinite(reported.item()) and after < before


def test_fiber_steps_per_batch_are_the_official_count():
    """E // N optimiser steps per layer (train.py:65): 4 images x (64, 16, 4) positions,
    N = 16 -> 16 + 4 + 1 steps; the schedule steps once per image batch."""
    model = tiny_cflow(fiber_batch=16)
    setup = model.train_setup(epochs=2, steps_per_epoch=3)
    steps = []
    setup.optimizer.register_step_post_hook(lambda *_: steps.append(1))
    model.train_batch(features(batch=4, side=8), setup, torch.Generator().manual_seed(0))
    assert len(steps) == 16 + 4 + 1 and setup.scheduler.last_epoch == 1


def _official_lr(c_lr, epoch, batch_id, total_batches, meta_epochs=25):
    """custom_models/utils.py:48-73 with main.py:62-73's settings, restated."""
    eta_min = c_lr * 0.1**3
    lr = eta_min + (c_lr - eta_min) * (1 + math.cos(math.pi * epoch / meta_epochs)) / 2
    if epoch < 2:
        warm_to = eta_min + (c_lr - eta_min) * (1 + math.cos(math.pi * 2 / meta_epochs)) / 2
        p = (batch_id + epoch * total_batches) / (2 * total_batches)
        lr = c_lr / 10 + p * (warm_to - c_lr / 10)
    return lr


@pytest.mark.parametrize("meta_epoch,batch_id", [(0, 0), (0, 17), (1, 40), (2, 0), (12, 5), (24, 63)])
def test_schedule_at_200_epochs_is_the_official_one(meta_epoch, batch_id):
    config, per_epoch = CFlowConfig(), 8  # 8 image batches per sub-epoch, 8 sub-epochs per meta-epoch
    total_batches = per_epoch * 8
    step = meta_epoch * total_batches + batch_id
    got = config.lr * lr_factor(step, 200 * per_epoch, config)
    assert got == pytest.approx(_official_lr(config.lr, meta_epoch, batch_id, total_batches), rel=1e-12)


def test_map_and_score_are_the_official_set_level_ones():
    """train.py:314-331 restated in numpy on random per-layer log-likelihoods."""
    g = torch.Generator().manual_seed(0)
    log_probs = [torch.randn(5, 8, 8, generator=g) - 3, torch.randn(5, 4, 4, generator=g) - 1]
    maps = cflow_anomaly_maps(log_probs, (16, 16))
    score_map = 0
    for lp in log_probs:
        prob = torch.exp(lp.double() - lp.double().max())
        score_map = score_map + F.interpolate(prob[:, None], size=(16, 16), mode="bilinear",
                                              align_corners=True)[:, 0].numpy()
    super_mask = score_map.max() - score_map
    np.testing.assert_allclose(maps["map"].numpy(), super_mask, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(maps["score"].numpy(), super_mask.max(axis=(1, 2)), rtol=1e-6)


def test_bad_inputs_are_named():
    with pytest.raises(TypeError, match="fibre_batch"):
        tiny_cflow(fibre_batch=3)
    with pytest.raises(ValueError, match="cond_channels"):
        tiny_cflow(cond_channels=6)
    model = tiny_cflow(fiber_batch=1000)
    with pytest.raises(ValueError, match="layer 0 has 128 positions per batch, fewer than fiber_batch 1000"):
        model.train_batch(features(), model.train_setup(1, 1))
    with pytest.raises(ValueError, match="feature map 2"):
        model([torch.randn(1, 4, 4, 4), torch.randn(1, 4, 2, 2), torch.randn(1, 7, 1, 1)])


def official_parameter_count(pool_dims=(512, 1024, 2048), blocks=8, cond=128) -> int:
    """Trainable parameters of the official decoders (model.py:33-53 in FrEIA's
    AllInOneBlock): per block subnet_fc(split + cond, 2 * other split) = Linear(d, 2d) +
    Linear(2d, out), plus the global affine scale and offset (n each); the soft permutation
    is a fixed, non-trainable matrix."""
    total = 0
    for n in pool_dims:
        d_in, d_out = n - n // 2 + cond, 2 * (n // 2)
        total += blocks * (d_in * 2 * d_in + 2 * d_in + 2 * d_in * d_out + d_out + 2 * n)
    return total


def test_parameter_count_of_the_official_wrn50_setup(monkeypatch):
    """81,647,616 trainable parameters (5.52 M + 17.07 M + 59.05 M) on the project's set-up
    of the official encoder (wide_resnet50_2_l234: layer2/3/4, model.py:93-113), as
    configs/paper/cflow.yaml runs it. The soft permutations' random rotations (scipy
    special_ortho_group, minutes at 2048 channels) are drawn as the identity here: they
    hold no trainable parameter."""
    import FrEIA.modules.all_in_one_block as aio

    monkeypatch.setattr(aio.special_ortho_group, "rvs", lambda n: np.eye(n))
    spec = extractor_spec("wide_resnet50_2_l234", image_size=256, pretrained=False)
    assert spec.channels == (512, 1024, 2048) and spec.shapes == ((32, 32), (16, 16), (8, 8))
    model = create("cflow", backbone=SpecOnlyExtractor(spec))
    count = sum(p.numel() for p in model.trainable_parameters())
    assert count == official_parameter_count() == 81_647_616


def test_train_score_evaluate_on_the_tiny_category(tiny_category, tmp_path):
    """Fibers of a real (tiny) cache, the set-level map through the scorer, and detection."""
    # Tiny: 2 epochs of 42 fiber steps (N = 64), 2 blocks, a 16-channel condition, lr 2e-3
    # (image AUROC 0.81 here; 1 epoch at lr 1e-3 gives 0.62 and fails).
    spec = tiny_spec(method="cflow", epochs=2, fiber_batch=64, coupling_blocks=2, cond_channels=16)
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"lr": 2e-3})})
    summary = train(spec, tiny_category["features"], tmp_path, index_csv=tiny_category["index"])
    assert summary["status"] == "ok" and summary["epochs"] == 2
    score(tmp_path / "model.pt", tiny_category["features"], tmp_path / "scores.npz",
          device="cpu", batch_size=3)  # batches smaller than the set: the map is still set-level
    spec.save(tmp_path / "spec.json")
    evaluate(tmp_path / "spec.json", tmp_path / "summary.json", tmp_path / "scores.npz", tmp_path / "metrics.json")
    with np.load(tmp_path / "scores.npz") as z:
        whole = cflow_anomaly_maps([torch.from_numpy(z[f"log_prob{l}"]) for l in range(3)], (64, 64))
        np.testing.assert_allclose(z["maps"], whole["map"].numpy(), rtol=1e-6)
        np.testing.assert_allclose(z["image_scores"], whole["score"].numpy(), rtol=1e-6)
        labels, scores = z["labels"], z["image_scores"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert scores[labels == 1].mean() > scores[labels == 0].mean(), metrics
    assert metrics["image_auroc"] >= 0.8, metrics
