"""Honest thresholds: the held-out validation split, the threshold rules and the metrics at
them (docs/statistics.md). The workflow's own outputs are checked in test_workflow.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from uadflows.config import ConfigError, load_plan, read_config
from uadflows.data import DatasetError, Sample, read_index
from uadflows.data.holdout import hold_out, validation_count
from uadflows.metrics.thresholds import (PixelCounter, image_metrics_at, image_threshold,
                                         pixel_threshold)
from uadflows.methods.cflow.anomaly_map import cflow_anomaly_maps
from uadflows.stats import point_estimates, replicates, resample_counts
from uadflows.stats.records import Records

ROOT = Path(__file__).resolve().parents[1]


def _samples(n_train: int = 20) -> list[Sample]:
    train = [Sample(Path(f"/d/train/good/{i:03d}.png"), "train", 0, "good") for i in range(n_train)]
    test = [Sample(Path("/d/test/good/000.png"), "test", 0, "good"),
            Sample(Path("/d/test/cut/000.png"), "test", 1, "cut", Path("/d/gt/cut/000_mask.png"))]
    return train + test


# ---- the split ------------------------------------------------------------------------------
def test_hold_out_is_deterministic_disjoint_and_sized():
    samples = _samples(20)
    a, b = hold_out(samples, 0.1, seed=0), hold_out(samples, 0.1, seed=0)
    assert a == b  # same samples, fraction and seed: the same images
    val = {s.image for s in a if s.split == "validation"}
    train = {s.image for s in a if s.split == "train"}
    assert len(val) == 2 and not val & train  # ceil(0.1 x 20), disjoint
    assert val | train == {s.image for s in samples if s.split == "train"}  # nothing lost
    assert [s for s in a if s.split == "test"] == [s for s in samples if s.split == "test"]
    assert [s.split for s in a] == ["train"] * 18 + ["validation"] * 2 + ["test"] * 2  # index order
    other = {s.image for s in hold_out(samples, 0.1, seed=1) if s.split == "validation"}
    assert other != val  # the seed chooses
    assert hold_out(samples, 0.0, seed=0) == samples  # 0: nothing held out


def test_grouped_views_are_held_out_together():
    """Real-IAD: the views of one physical sample never straddle train and validation."""
    samples = _samples(20)
    groups = [f"S{i // 5}" for i in range(20)] + ["t0", "t1"]  # 4 samples of 5 views
    out = hold_out(samples, 0.25, seed=0, groups=groups)
    group_of = dict(zip((s.image for s in samples), groups))
    val = {group_of[s.image] for s in out if s.split == "validation"}
    train = {group_of[s.image] for s in out if s.split == "train"}
    assert len(val) == 1 and not val & train and sum(s.split == "validation" for s in out) == 5


def test_fraction_errors_name_the_key():
    assert validation_count(8, 0.1) == 1  # at least one image for any fraction > 0
    with pytest.raises(DatasetError, match=r"^config key 'datasets\.demo\.validation\.fraction': "
                       r"0\.9 of 8 training image\(s\) holds out 8 and leaves 0"):
        validation_count(8, 0.9, "datasets.demo.validation.fraction")
    with pytest.raises(DatasetError, match=r"^config key 'k': 1\.0 is not in \[0, 1\)"):
        validation_count(8, 1.0, "k")
    raw = read_config(ROOT / "configs/test/tiny.yaml")  # 8 demo training images per category
    raw["datasets"]["demo"]["validation"] = {"fraction": 0.95, "seed": 0}
    with pytest.raises(ConfigError, match=r"^config key 'datasets\.demo\.validation\.fraction': "
                       r"0\.95 of 8 training image"):
        load_plan(raw)
    raw["datasets"]["demo"]["validation"] = {"fraction": 1}
    with pytest.raises(ConfigError, match=r"config key 'datasets\.demo\.validation\.fraction': "
                       r"Input should be less than 1"):
        load_plan(raw)


def test_official_split_is_kept_and_recorded():
    ad2 = [Sample(Path("/v/0.png"), "validation", 0, "good"), *_samples(4)]
    with pytest.raises(DatasetError, match=r"^config key 'datasets\.ad2\.validation\.fraction': "
                       "this dataset has its own validation split"):
        hold_out(ad2, 0.1, 0, "datasets.ad2.validation.fraction")
    ad2 = read_config(ROOT / "configs/test/tiny.yaml")
    ad2["datasets"] = {"ad2": {"format": "mvtec_ad2", "root": "/elsewhere", "categories": ["can"]}}
    assert next(iter(load_plan(ad2, check_roots=False).specs.values())).validation == "official"
    ad2["datasets"]["ad2"]["validation"] = {"fraction": 0.2}
    with pytest.raises(ConfigError, match=r"^config key 'datasets\.ad2\.validation': mvtec_ad2 has "
                       "an official validation split"):
        load_plan(ad2, check_roots=False)
    raw = read_config(ROOT / "configs/test/tiny.yaml")
    plan = load_plan(raw)
    spec = next(iter(plan.specs.values()))
    assert spec.validation.fraction == 0.1 and spec.validation.seed == 0  # the default, recorded
    assert spec.flat()["validation.fraction"] == "0.1"  # an MLflow param
    assert "--validation-fraction 0.1" in plan.validation_args("demo")
    raw["datasets"]["demo"]["validation"] = {"fraction": 0}
    assert load_plan(raw).validation_args("demo") == ""  # disabled cleanly


def test_verify_writes_the_split_into_the_index(tiny_category, tmp_path):
    """`uadflows verify` (the workflow's index step) marks the held-out images in the index;
    the feature cache then keeps them apart: the train split never holds them."""
    env_bin = Path(sys.executable).parent
    out = tmp_path / "index"
    cmd = [str(env_bin / "uadflows"), "verify", "--dataset", "demo", "--root",
           str(tiny_category["root"]), "--category", "brick", "--index-dir", str(out),
           "--validation-fraction", "0.25", "--validation-seed", "3",
           "--validation-key", "datasets.demo.validation.fraction"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    samples = read_index(out / "brick.csv")
    val = [s for s in samples if s.split == "validation"]
    assert len(val) == 2 and sum(s.split == "train" for s in samples) == 6  # ceil(0.25 x 8)
    assert "2 training image(s) held out" in p.stdout
    cmd[cmd.index("0.25")] = "0.9"
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 2 and "config key 'datasets.demo.validation.fraction'" in p.stderr


# ---- the rules ------------------------------------------------------------------------------
def test_threshold_rules_on_constructed_scores():
    scores = np.arange(101, dtype=float)  # 0 .. 100: the q-quantile is 100 q
    assert image_threshold(scores, {"rule": "quantile", "q": 0.99}) == pytest.approx(99.0)
    assert image_threshold([1.0, 3.0], {"rule": "mean_std", "k": 3}) == pytest.approx(5.0)  # 2 + 3 x 1
    maps = [np.array([[0.0, 1.0]]), np.array([[2.0, 3.0]])]  # pooled: mean 1.5, std sqrt(1.25)
    assert pixel_threshold(maps, {"rule": "mean_std", "k": 2}) == pytest.approx(1.5 + 2 * np.sqrt(1.25))
    assert pixel_threshold(maps, {"rule": "quantile", "q": 0.5}) == pytest.approx(1.5)


def test_metrics_at_a_threshold_are_exact():
    labels = [0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.5, 0.9, 0.4, 0.8, 0.95]
    out = image_metrics_at(labels, scores, 0.5)  # predicted: 0.5, 0.9, 0.8, 0.95
    assert out == pytest.approx({"image_precision": 0.5, "image_recall": 2 / 3,
                                 "image_f1": 2 * 2 / (2 * 2 + 2 + 1)})
    assert image_metrics_at([0, 1], [0.1, 0.2], 1.0)["image_precision"] == 0.0  # none predicted
    counter = PixelCounter(2, threshold=0.5)
    counter(0, np.array([[0.9, 0.1], [0.6, 0.2]]), np.array([[1, 0], [0, 0]], bool))  # tp 1, fp 1
    counter(1, np.zeros((2, 2)), np.zeros((2, 2), bool))  # a good image left alone: IoU 1
    assert (counter.tp.tolist(), counter.fp.tolist(), counter.fn.tolist()) == ([1, 0], [1, 0], [0, 0])
    assert counter.metrics() == pytest.approx({"pixel_precision": 0.5, "pixel_recall": 1.0,
                                               "pixel_f1": 2 / 3, "seg_iou": (0.5 + 1.0) / 2})


def test_bootstrap_of_thresholded_metrics_resamples_the_exact_counts():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.5, 0.9, 0.4, 0.8, 0.95])
    tp, fp, fn = np.array([0, 0, 2, 1, 3, 0]), np.array([1, 0, 4, 0, 0, 2]), np.array([0, 0, 0, 2, 1, 5])
    records = Records(image=np.array([str(i) for i in range(6)]), mask=np.array([""] * 6),
                      label=labels, defect=np.array(["good"] * 3 + ["cut"] * 3), image_score=scores,
                      val_image_threshold=0.5, val_pixel_threshold=0.3, val_tp=tp, val_fp=fp, val_fn=fn)
    point = point_estimates(records)
    assert point["image_f1_at_val_threshold"] == pytest.approx(image_metrics_at(labels, scores, 0.5)["image_f1"])
    assert point["pixel_f1_at_val_threshold"] == pytest.approx(2 * 6 / (2 * 6 + 7 + 8))
    iou = [0, 1, 2 / 6, 1 / 3, 3 / 4, 0]
    assert point["seg_iou_at_val_threshold"] == pytest.approx(np.mean(iou))
    counts = resample_counts(labels, 50, seed=0)
    values = replicates(records, counts)
    b = 7  # one resample, literally: repeat each image as often as it was drawn
    rows = np.repeat(np.arange(6), counts[b])
    t, f, n = tp[rows].sum(), fp[rows].sum(), fn[rows].sum()
    assert values["pixel_f1_at_val_threshold"][b] == pytest.approx(2 * t / (2 * t + f + n))
    assert values["seg_iou_at_val_threshold"][b] == pytest.approx(np.mean(np.array(iou)[rows]))


def test_cflow_validation_maps_share_the_test_scale():
    """A validation image identical to a test image gets the test image's map: the set-level
    maxima come from the test set (reference), not from the validation set."""
    g = torch.Generator().manual_seed(0)
    test = [torch.randn(5, 4, 4, generator=g) * 3, torch.randn(5, 2, 2, generator=g) * 3]
    val = [lp[1:3].clone() for lp in test]
    whole = cflow_anomaly_maps(test, (8, 8))
    own = cflow_anomaly_maps(val, (8, 8))
    shared = cflow_anomaly_maps(val, (8, 8), reference=test)
    assert torch.allclose(shared["map"], whole["map"][1:3]) and torch.allclose(shared["score"], whole["score"][1:3])
    assert not torch.allclose(own["map"], whole["map"][1:3])  # its own maxima: another scale


def test_a_cache_built_before_the_split_is_refused(tiny_category, tmp_path):
    """Changing the fraction changes the index, so features extracted from the old index are
    refused by name (the workflow then rebuilds them), never read for the wrong images."""
    from uadflows.data import write_index
    from uadflows.features import CacheError, open_cache

    held = write_index(hold_out(read_index(tiny_category["index"]), 0.25, 0), tmp_path / "brick.csv")
    open_cache(tiny_category["features"], index_csv=tiny_category["index"])  # its own index: fine
    with pytest.raises(CacheError, match="built from another version of .*brick.csv; rebuild it"):
        open_cache(tiny_category["features"], index_csv=held)
