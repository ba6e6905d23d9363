"""The dataset-specific metrics: MVTec AD 2's AU-PRO at two limits, Real-IAD's sample level."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uadflows import metrics as M
from uadflows.evaluate import EXTRA_PRO_LIMITS, _sample_level


def _maps_masks(seed=0):
    rng = np.random.default_rng(seed)
    masks = [np.zeros((30, 40), bool) for _ in range(4)]
    masks[1][5:15, 5:20] = True
    masks[3][20:28, 10:14] = True
    maps = [rng.normal(size=(15, 20)).astype(np.float32) for _ in range(4)]
    maps[1][2:8, 2:10] += 1.5
    maps[3][10:14, 5:7] += 0.7
    return maps, masks


def test_au_pro_at_both_limits_equals_separate_computations():
    maps, masks = _maps_masks()
    labels, scores = [0, 1, 0, 1], [0.1, 0.9, 0.3, 0.6]
    out = M.evaluate(labels, scores, maps, masks, pro_limit=0.3,
                     extra_pro_limits=EXTRA_PRO_LIMITS["mvtec_ad2"])
    upsampled = M.to_mask_resolution(maps, masks)
    assert out["au_pro_0.05"] == pytest.approx(M.au_pro(upsampled, masks, limit=0.05), abs=1e-12)
    assert out["au_pro_0.3"] == pytest.approx(M.au_pro(upsampled, masks, limit=0.3), abs=1e-12)
    assert out["au_pro_0.3"] == out["au_pro"] and out["au_pro_0.05"] != out["au_pro_0.3"]
    assert "au_pro_0.05" not in M.evaluate(labels, scores, maps, masks)
    with pytest.raises(M.MetricsError, match="extra_pro_limits"):
        M.evaluate(labels, scores, maps, masks, extra_pro_limits=(0.0,))


def test_validation_threshold_and_seg_f1():
    from sklearn.metrics import f1_score

    from uadflows.metrics.segmentation import mean_plus_std_threshold, segmentation_f1

    rng = np.random.default_rng(1)
    normal = [rng.normal(1000.0, 0.01, size=s) for s in ((30, 40), (8, 8), (50, 20))]
    flat = np.concatenate([m.ravel() for m in normal])
    assert mean_plus_std_threshold(normal) == pytest.approx(flat.mean() + 3 * flat.std(), rel=1e-12)
    maps, masks = _maps_masks()
    maps = M.to_mask_resolution(maps, masks)
    f1 = segmentation_f1(zip(maps, masks), 1.0)
    truth = np.concatenate([m.ravel() for m in masks])
    pred = np.concatenate([m.ravel() >= 1.0 for m in maps])
    assert f1 == pytest.approx(f1_score(truth, pred)) and f1 > 0.3
    shifted = [np.roll(m, 12, axis=1) for m in masks]  # a misaligned mask scores lower
    assert segmentation_f1(zip(maps, shifted), 1.0) < f1 / 2
    with pytest.raises(M.MetricsError, match="no anomalous pixel"):
        segmentation_f1(zip(maps, [np.zeros_like(m) for m in masks]), 1.0)
    with pytest.raises(M.MetricsError, match="validation maps: none given"):
        mean_plus_std_threshold([])


def test_realiad_sample_level_takes_the_maximum_over_views():
    # two samples of 3 views: S1 normal, S2 anomalous in one view only
    images = [f"r/audiojack/{kind}/S000{n}/v{v}.jpg" for kind, n in (("OK", 1), ("NG/HS", 2))
              for v in range(3)]
    labels = np.array([0, 0, 0, 0, 1, 0])
    # max over views: S1 0.8 < S2 0.9; the mean (0.37 > 0.32) or the minimum (0.1 > 0.0)
    # would rank the normal sample first and give 0
    scores = np.array([0.2, 0.8, 0.1, 0.05, 0.9, 0.0])
    out = _sample_level(labels, scores, np.array(images))
    assert out == {"sample_auroc": 1.0, "sample_ap": 1.0, "sample_f1_max": 1.0}
    assert _sample_level(labels, scores[[0, 4, 2, 3, 1, 5]], np.array(images))["sample_auroc"] == 0.0


def test_mvtec_ad2_pipeline_scores_validation_and_evaluates_both_limits(tmp_path):
    """Index -> features (train, validation, test) -> 1 epoch -> scores -> metrics.json."""
    from conftest import TINY_EXTRACTOR, tiny_spec

    from uadflows.data import index_category, write_index
    from uadflows.data.tiny import make_tiny
    from uadflows.evaluate import evaluate
    from uadflows.features import extract, open_cache
    from uadflows.score import score
    from uadflows.train import train

    root = make_tiny("mvtec_ad2", tmp_path / "ad2", ("can",), size=(72, 88), n_train=4,
                     n_test_good=2, n_test_defect=2)
    index = write_index(index_category("mvtec_ad2", root, "can"), tmp_path / "can.csv")
    extract(index, tmp_path / "features", TINY_EXTRACTOR, batch_size=8, device="cpu")
    assert {k: v["n"] for k, v in open_cache(tmp_path / "features")["splits"].items()} == \
        {"train": 4, "test": 4, "validation": 2}
    spec = tiny_spec(epochs=1).model_copy(update={"dataset": "ad2", "format": "mvtec_ad2",
                                                  "category": "can", "validation": "official"})
    run = tmp_path / "run"
    run.mkdir()
    spec.save(run / "spec.json")
    assert train(spec, tmp_path / "features", run, index_csv=index)["status"] == "ok"
    score(run / "model.pt", tmp_path / "features", tmp_path / "scores.npz", device="cpu")
    with np.load(tmp_path / "scores.npz") as z:
        assert z["validation_maps"].shape == (2, 64, 64) and z["maps"].shape == (4, 64, 64)
        assert all("/validation/good/" in p for p in z["validation_images"])
    metrics = evaluate(run / "spec.json", run / "summary.json", tmp_path / "scores.npz",
                       tmp_path / "metrics.json")["metrics"]
    assert {"au_pro", "au_pro_0.05", "au_pro_0.3", "seg_f1"} <= set(metrics)
    with np.load(tmp_path / "scores.npz") as z:  # the threshold is the validation maps' own
        up = [M.to_mask_resolution([m], [np.zeros((72, 88), bool)])[0] for m in z["validation_maps"]]
    flat = np.concatenate([u.ravel() for u in up]).astype(np.float64)
    assert metrics["validation_threshold"] == pytest.approx(flat.mean() + 3 * flat.std())
    # the configurable thresholds use the official split; their default pixel rule is SegF1's
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["thresholds"]["validation"]["split"] == "official"
    assert record["thresholds"]["pixel"]["value"] == pytest.approx(metrics["validation_threshold"])
    assert metrics["pixel_f1_at_val_threshold"] == pytest.approx(metrics["seg_f1"])
