"""The kNN floor: exact nearest distances, one pass over the cache, and it detects."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import tiny_spec
from uadflows.config import ConfigError, load_plan
from test_msflow import TinyExtractor
from uadflows.evaluate import evaluate
from uadflows.methods import create
from uadflows.methods.knn.anomaly_map import knn_anomaly_maps, nearest_distances
from uadflows.score import score
from uadflows.train import load_model, train


@pytest.mark.parametrize("chunk", [7, 64, 2**20])  # one bank row per block, a few, all
def test_nearest_distance_equals_bruteforce_cdist(chunk):
    g = torch.Generator().manual_seed(0)
    queries, bank = torch.randn(37, 5, generator=g), torch.randn(23, 5, generator=g)
    expected = torch.cdist(queries.double(), bank.double(),
                           compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
    got = nearest_distances(queries, bank, chunk=chunk)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    assert nearest_distances(bank[:4], bank, chunk=chunk).abs().max() < 1e-3  # itself: 0


def test_fit_stores_every_position_and_forward_gives_distance_maps():
    model = create("knn", backbone=TinyExtractor())
    feats = [torch.randn(3, c, 16 >> s, 16 >> s) for s, c in enumerate((4, 4, 8))]
    model.fit([feats])
    assert [b.shape for b in model.banks()] == [(3 * 256, 4), (3 * 64, 4), (3 * 16, 8)]
    out = model(feats)
    assert [z.shape for z in out.z] == [(3, 1, 16, 16), (3, 1, 8, 8), (3, 1, 4, 4)]
    assert max(z.abs().max().item() for z in out.z) < 1e-2  # training images are in the bank
    maps = model.anomaly_maps(model([f + 1.0 for f in feats]), (64, 64))
    assert maps["map"].shape == (3, 64, 64) and maps["score"].shape == (3,)
    torch.testing.assert_close(maps["score"], maps["map"].flatten(1).amax(dim=1))


def test_map_is_the_mean_of_upsampled_scales_and_marks_the_far_position():
    fine, coarse = torch.zeros(1, 4, 4), torch.zeros(1, 2, 2)
    fine[0, 1, 2] = 8.0
    maps = knn_anomaly_maps([fine, coarse], (8, 8))
    assert maps["map"].shape == (1, 8, 8)
    peak = np.unravel_index(int(maps["map"][0].argmax()), (8, 8))
    assert peak[0] in (2, 3) and peak[1] in (4, 5)  # position (1, 2) of 4x4 at 8x8
    assert maps["score"].item() == pytest.approx(maps["map"].max().item())
    assert maps["map"].max().item() < 8.0 / 2 + 1e-6  # averaged with the coarse scale's 0


def test_bank_subsample_is_seeded_and_bounded():
    feats = [torch.randn(4, c, 16 >> s, 16 >> s) for s, c in enumerate((4, 4, 8))]
    banks = []
    for _ in range(2):
        model = create("knn", backbone=TinyExtractor(), bank_size=50)
        model.fit([feats], generator=torch.Generator().manual_seed(3))
        banks.append(model.banks())
    assert [b.shape[0] for b in banks[0]] == [50, 50, 50]
    assert all(torch.equal(a, b) for a, b in zip(*banks))
    all_rows = feats[0].permute(0, 2, 3, 1).reshape(-1, 4).half()
    assert all((all_rows == row).all(dim=1).any() for row in banks[0][0])  # real training rows


def test_bad_parameters_are_named():
    with pytest.raises(TypeError, match="bank_sise"):
        create("knn", backbone=TinyExtractor(), bank_sise=10)
    with pytest.raises(ValueError, match="epochs must be 1"):
        create("knn", backbone=TinyExtractor(), epochs=3)
    with pytest.raises(ValueError, match="bank_size"):
        create("knn", backbone=TinyExtractor(), bank_size=0)
    model = create("knn", backbone=TinyExtractor())
    with pytest.raises(ValueError, match="memory bank is empty"):
        model([torch.randn(1, c, 4, 4) for c in (4, 4, 8)])
    with pytest.raises(ValueError, match="feature map 1"):
        model.fit([[torch.randn(1, 4, 4, 4), torch.randn(1, 5, 2, 2), torch.randn(1, 8, 1, 1)]])


def test_knn_detects_on_the_tiny_category(tiny_category, tmp_path):
    """train (one pass) -> score -> evaluate: defects score higher than good images, and
    the map is higher inside the defect masks than outside (a sign flip fails both)."""
    spec = tiny_spec(method="knn", epochs=1)
    summary = train(spec, tiny_category["features"], tmp_path, index_csv=tiny_category["index"])
    assert summary["status"] == "ok" and summary["epochs"] == 1 and summary["flow_params"] == 0
    model, _, _ = load_model(tmp_path / "model.pt")
    assert model.banks()[0].shape == (8 * 16 * 16, 24)  # 8 training images, 16x16 positions at 64 px
    score(tmp_path / "model.pt", tiny_category["features"], tmp_path / "scores.npz", device="cpu")
    spec.save(tmp_path / "spec.json")
    evaluate(tmp_path / "spec.json", tmp_path / "summary.json", tmp_path / "scores.npz", tmp_path / "metrics.json")
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    with np.load(tmp_path / "scores.npz") as z:
        labels, scores, maps = z["labels"], z["image_scores"], z["maps"]
    assert scores[labels == 1].mean() > scores[labels == 0].mean()
    assert metrics["image_auroc"] >= 0.9 and metrics["pixel_auroc"] >= 0.8, metrics


def test_a_config_giving_knn_epochs_is_refused_at_plan_time(tmp_path):
    raw = {"sweep": "t", "seeds": [0], "datasets": {"demo": {"format": "demo", "root": str(tmp_path)}},
           "models": {"knn-lite0": {"method": "knn", "backbone": "tf_efficientnet_lite0", "image_size": 64,
                                    "epochs": 3}}}
    with pytest.raises(ConfigError, match=r"config key 'models\.knn-lite0\.epochs': knn is fitted in one pass"):
        load_plan(raw, check_roots=False)
