"""The bootstrap (uadflows.stats): equal to a slow literal implementation on the same
resamples, exact point estimates, binned within 1e-4, coverage, paired tests."""

from __future__ import annotations

import numpy as np
import pytest

from uadflows.metrics import evaluate, image_metrics, pixel_metrics
from uadflows.stats import (
    Records,
    RecordsError,
    bootstrap_p,
    friedman_nemenyi,
    intervals,
    load_records,
    not_worse_than_best,
    paired_bootstrap,
    point_estimates,
    records_from_maps,
    replicates,
    resample_counts,
    save_records,
    seed_summary,
    wilcoxon_pairs,
)
from uadflows.stats.curves import binary_metrics


def _blob_masks(rng, n_good, n_bad, size):
    masks = [np.zeros((size, size), bool) for _ in range(n_good)]
    for _ in range(n_bad):
        m = np.zeros((size, size), bool)
        for _ in range(rng.integers(1, 3)):
            y, x = rng.integers(0, size - 6, 2)
            h, w = rng.integers(2, 7, 2)
            m[y:y + h, x:x + w] = True
        masks.append(m)
    return masks


def _case(seed=0, n_good=6, n_bad=5, size=16, levels=None):
    """Maps that score defects higher, optionally quantised to a few levels (ties)."""
    rng = np.random.default_rng(seed)
    masks = _blob_masks(rng, n_good, n_bad, size)
    maps = [rng.normal(size=(size, size)) + 1.5 * m for m in masks]
    if levels:
        maps = [np.round(m * levels / 4) / levels for m in maps]
    labels = np.array([0] * n_good + [1] * n_bad)
    scores = np.array([m.max() for m in maps])
    if levels:
        scores = np.round(scores * 2) / 2
    return labels, scores, [m.astype(np.float32) for m in maps], masks


def test_counts_are_stratified_and_seeded():
    labels = np.array([0, 0, 0, 1, 1])
    c = resample_counts(labels, 50, seed=3)
    assert c.shape == (50, 5)
    assert np.all(c[:, :3].sum(1) == 3) and np.all(c[:, 3:].sum(1) == 2)
    assert np.array_equal(c, resample_counts(labels, 50, seed=3))
    assert not np.array_equal(c, resample_counts(labels, 50, seed=4))


def test_point_estimates_are_exact_without_binning():
    """Few distinct levels: the edges are the levels, so every metric is the exact one."""
    labels, scores, maps, masks = _case(levels=5)
    records = records_from_maps(labels, scores, maps, masks)
    exact = {**image_metrics(labels, scores), **pixel_metrics(maps, masks)}
    got = point_estimates(records)
    for k, v in exact.items():
        assert got[k] == pytest.approx(v, abs=1e-12), k


def test_binned_point_estimates_within_1e4():
    """Continuous scores: ~200k pixels, far more distinct values than bins."""
    labels, scores, maps, masks = _case(seed=1, n_good=12, n_bad=12, size=128)
    records = records_from_maps(labels, scores, maps, masks)
    assert records.normal.shape[1] < 200_000
    exact = {**image_metrics(labels, scores), **pixel_metrics(maps, masks)}
    got = point_estimates(records)
    worst = max(abs(got[k] - v) for k, v in exact.items())
    assert worst < 1e-4, {k: got[k] - v for k, v in exact.items()}
    # a coarse binning is visibly off: the check above can fail
    coarse = point_estimates(records_from_maps(labels, scores, maps, masks, bins=9))
    assert max(abs(coarse[k] - exact[k]) for k in ("pixel_ap", "au_pro")) > 1e-3


def test_fast_bootstrap_equals_the_literal_one():
    """Same resamples (counts) -> the same numbers as re-evaluating the repeated images."""
    labels, scores, maps, masks = _case(seed=2, levels=5)
    records = records_from_maps(labels, scores, maps, masks)
    counts = resample_counts(labels, 12, seed=0)
    fast = replicates(records, counts)
    for b, c in enumerate(counts):
        idx = np.repeat(np.arange(labels.size), c)
        slow = {**image_metrics(labels[idx], scores[idx]),
                **pixel_metrics([maps[i] for i in idx], [masks[i] for i in idx])}
        for k, v in slow.items():
            assert fast[k][b] == pytest.approx(v, abs=1e-12), (b, k)


def test_binary_metrics_match_sklearn_on_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(size=200) + y, 1)
    levels, inv = np.unique(s, return_inverse=True)
    neg = np.bincount(inv[y == 0], minlength=levels.size)[None]
    pos = np.bincount(inv[y == 1], minlength=levels.size)[None]
    got = binary_metrics(neg, pos)
    exact = image_metrics(y, s)
    for k in ("auroc", "ap", "f1_max"):
        assert got[k][0] == pytest.approx(exact[f"image_{k}"], abs=1e-12)


def test_interval_coverage_of_a_known_auroc():
    """Normal N(0, 1) vs anomalous N(d, 1): AUROC = Phi(d / sqrt 2). Over 200 test sets
    about 95 % of the 95 % intervals must cover it."""
    from scipy.stats import norm

    d = 1.2
    truth = norm.cdf(d / np.sqrt(2))
    rng = np.random.default_rng(7)
    covered = 0
    for trial in range(200):
        y = np.array([0] * 60 + [1] * 40)
        s = rng.normal(size=100) + d * y
        r = Records(image=np.arange(100).astype(str), mask=np.array([""] * 100), label=y,
                    defect=np.where(y, "d", "good"), image_score=s)
        low, high = intervals(r, resamples=400, seed=trial)["image_auroc"]
        covered += low <= truth <= high
    assert 0.89 <= covered / 200 <= 0.99, covered


def test_records_round_trip_and_errors(tmp_path):
    labels, scores, maps, masks = _case(seed=3)
    records = records_from_maps(labels, scores, maps, masks, bins=300)
    save_records(records, tmp_path / "records.npz", tmp_path / "records.csv")
    back = load_records(tmp_path / "records.npz")
    assert point_estimates(back) == point_estimates(records)
    assert (tmp_path / "records.csv").read_text().splitlines()[0].startswith("index,image,mask,label")
    with np.load(tmp_path / "records.npz") as z:
        data = {k: z[k] for k in z.files}
    data["anomalous"] = data["anomalous"][:, :-1]
    np.savez(tmp_path / "bad.npz", **data)
    with pytest.raises(RecordsError, match=r"bad.npz: 'anomalous' has \d+ bins, 'edges' gives"):
        load_records(tmp_path / "bad.npz")
    del data["image_score"]
    np.savez(tmp_path / "bad2.npz", **data)
    with pytest.raises(RecordsError, match=r"bad2.npz: missing key\(s\) \['image_score'\]"):
        load_records(tmp_path / "bad2.npz")


def test_evaluator_hook_records_the_upsampled_maps():
    """on_pair sees each map at the evaluation's resolution: records from it reproduce the
    evaluator's exact pixel metrics."""
    from uadflows.stats import PixelRecorder, bin_edges
    from uadflows.metrics import to_mask_resolution

    labels, scores, maps, masks = _case(seed=4, size=32)
    small = [m[::2, ::2].copy() for m in maps]
    big = to_mask_resolution(small, masks)
    recorder = PixelRecorder(len(labels), bin_edges(list(big), masks, bins=100_000))
    exact = evaluate(labels, scores, small, masks, on_pair=recorder)
    r = recorder.fill(records_from_maps(labels, scores, small, None))
    got = point_estimates(r)
    for k in ("pixel_auroc", "pixel_ap", "pixel_f1_max", "au_pro"):
        assert got[k] == pytest.approx(exact[k], abs=1e-12), k


def _entry(seed, shift, labels, maps, masks):
    rng = np.random.default_rng(seed)
    noisy = [m + rng.normal(scale=0.3, size=m.shape).astype(np.float32) + shift * k
             for m, k in zip(maps, masks)]
    scores = np.array([m.max() for m in noisy])
    return records_from_maps(labels, scores, noisy, masks, bins=3000)


def test_paired_identical_entries_give_zero_and_p_one():
    labels, _, maps, masks = _case(seed=5)
    a = _entry(0, 0.0, labels, maps, masks)
    pairs = paired_bootstrap({"a": [a], "b": [a]}, ["image_auroc", "pixel_auroc", "au_pro"], 200)
    assert np.all(pairs["diff"] == 0) and np.all(pairs["low"] == 0) and np.all(pairs["high"] == 0)
    assert np.all(pairs["p"] == 1.0)


def test_paired_clearly_better_entry_has_small_p():
    labels, _, maps, masks = _case(seed=6, n_good=10, n_bad=10, size=24)
    good = _entry(1, 2.0, labels, maps, masks)
    bad = _entry(2, -1.0, labels, maps, masks)
    pairs = paired_bootstrap({"good": [good], "bad": [bad]}, ["pixel_auroc", "au_pro"], 500)
    assert np.all(pairs["diff"] > 0) and np.all(pairs["low"] > 0)
    assert np.all(pairs["p"] < 0.01)
    # swapped order: the sign flips, the p-value does not
    swapped = paired_bootstrap({"bad": [bad], "good": [good]}, ["pixel_auroc"], 500)
    assert swapped["diff"].iloc[0] == pytest.approx(-pairs["diff"].iloc[0])
    best, kept = not_worse_than_best({"good": 0.99, "bad": 0.9}, pairs, "pixel_auroc")
    assert best == "good" and kept == set()
    best, kept = not_worse_than_best({"good": 0.99, "bad": 0.9},
                                     paired_bootstrap({"good": [good], "bad": [good]}, ["pixel_auroc"], 100),
                                     "pixel_auroc")
    assert kept == {"bad"}


def test_paired_needs_the_same_test_set():
    labels, scores, maps, masks = _case(seed=7)
    a = records_from_maps(labels, scores, maps, masks, bins=100)
    b = records_from_maps(labels[1:], scores[1:], maps[1:], masks[1:], bins=100)
    with pytest.raises(RecordsError, match="entry 'b': its test images differ from those of 'a'"):
        paired_bootstrap({"a": [a], "b": [b]}, ["image_auroc"], 10)


def test_bootstrap_p_and_seed_summary():
    assert bootstrap_p(np.zeros(99)) == 1.0
    assert bootstrap_p(np.ones(99)) == pytest.approx(0.02)
    s = seed_summary([0.9, 0.92, 0.94])
    assert s["mean"] == pytest.approx(0.92) and s["std"] == pytest.approx(0.02)
    assert s["t_low"] == pytest.approx(0.92 - 4.302653 * 0.02 / np.sqrt(3), abs=1e-6)
    assert np.isnan(seed_summary([0.9])["std"])


def test_wilcoxon_and_friedman():
    import pandas as pd

    rng = np.random.default_rng(0)
    base = rng.uniform(0.8, 0.9, 12)
    frame = pd.DataFrame({"a": base + 0.05, "b": base + rng.normal(0, 0.001, 12), "c": base - 0.05})
    w = wilcoxon_pairs(frame)
    assert w.set_index(["a", "b"]).loc[("a", "c"), "p"] < 0.01
    f = friedman_nemenyi(frame)
    assert f["p"] < 0.01 and list(f["ranks"].sort_values().index) == ["a", "b", "c"]
    assert f["ranks"]["c"] - f["ranks"]["a"] > f["cd"]
    assert wilcoxon_pairs(pd.DataFrame({"a": base, "b": base}))["p"].iloc[0] == 1.0


def test_miou_is_resampled_with_its_images():
    """Segmentations (U-Flow): per-image IoUs recorded through the evaluator's hook; the
    bootstrap's mIoU on a resample is the mean IoU of the images drawn."""
    labels, scores, maps, masks = _case(seed=8)
    segmentations = [m > 1.0 for m in maps]
    ious = np.full(len(labels), np.nan)
    exact = evaluate(labels, scores, maps, masks, segmentations=segmentations, on_iou=ious.__setitem__)
    r = records_from_maps(labels, scores, maps, masks, bins=500)
    r.iou = ious
    assert point_estimates(r)["miou"] == pytest.approx(exact["miou"], abs=1e-12)
    counts = resample_counts(labels, 5, seed=1)
    for b, c in enumerate(counts):
        idx = np.repeat(np.arange(labels.size), c)
        slow = evaluate(labels[idx], scores[idx], [maps[i] for i in idx], [masks[i] for i in idx],
                        segmentations=[segmentations[i] for i in idx])["miou"]
        assert replicates(r, counts)["miou"][b] == pytest.approx(slow, abs=1e-12)
