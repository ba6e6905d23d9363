"""AU-PRO: the fast implementation against the official MVTec AD definition written literally.

``literal_au_pro`` below follows the official evaluation (v1.0) step by step: label 8-connected
regions, give every normal pixel an FPR increment and every anomalous pixel a PRO increment
1/|region|, sort *every* pixel by score, cumulative sums, keep the last point of each run of
tied scores, add (0, 0) and (1, 1), trapezoid up to the limit with interpolation, / limit.
benchmarks/metrics.py imports it too, to time it against the fast one.
"""

from __future__ import annotations

import bisect

import numpy as np
import pytest
from scipy import ndimage

from uadflows.metrics import MetricsError, au_pro, pixel_metrics, pro_curve


# ---- the literal definition ------------------------------------------------------------
def literal_pro_curve(maps, masks) -> tuple[np.ndarray, np.ndarray]:
    scores, fp_steps, pro_steps = [], [], []
    n_normal = n_regions = 0
    for score_map, mask in zip(maps, masks):
        gt = np.zeros(np.shape(score_map), bool) if mask is None else np.asarray(mask) > 0
        labelled, count = ndimage.label(gt, structure=np.ones((3, 3)))
        n_regions += count
        normal = labelled == 0
        n_normal += int(normal.sum())
        pro_step = np.zeros(gt.shape, dtype=np.float64)
        for region in range(1, count + 1):
            inside = labelled == region
            pro_step[inside] = 1.0 / inside.sum()
        scores.append(np.asarray(score_map).ravel())
        fp_steps.append(normal.ravel().astype(np.uint8))
        pro_steps.append(pro_step.ravel())
    flat = np.concatenate(scores)
    del scores
    order = np.argsort(flat)[::-1]  # every pixel, highest score first
    flat = flat[order]
    fpr = np.cumsum(np.concatenate(fp_steps)[order], dtype=np.float64) / n_normal
    del fp_steps
    pro = np.cumsum(np.concatenate(pro_steps)[order]) / n_regions
    del pro_steps, order
    last_of_tie = np.append(np.diff(flat) != 0, True)  # tied scores are one threshold
    fpr, pro = np.clip(fpr[last_of_tie], 0, 1), np.clip(pro[last_of_tie], 0, 1)
    return np.concatenate(([0.0], fpr, [1.0])), np.concatenate(([0.0], pro, [1.0]))


def literal_trapezoid(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    correction = 0.0
    if x_max not in x:
        ins = bisect.bisect(x, x_max)  # first point beyond the limit
        assert 0 < ins < len(x)
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    keep = x <= x_max
    x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def literal_au_pro(maps, masks, limit: float) -> float:
    fpr, pro = literal_pro_curve(maps, masks)
    return literal_trapezoid(fpr, pro, limit) / limit


# ---- test data ---------------------------------------------------------------------------
def random_case(seed: int, levels: int | None, n_images: int = 6):
    """Maps of varying sizes with several regions per defective image (some touching only
    diagonally), good images without regions, scores higher inside defects; ``levels``
    quantises the scores to that many values (heavy ties)."""
    rng = np.random.default_rng(seed)
    maps, masks = [], []
    for i in range(n_images):
        h, w = int(rng.integers(20, 36)), int(rng.integers(20, 36))
        mask = np.zeros((h, w), np.uint8)
        if i % 3 != 0:  # every third image is good
            for _ in range(int(rng.integers(1, 5))):
                y, x = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
                mask[y:y + int(rng.integers(1, 6)), x:x + int(rng.integers(1, 6))] = 255
            mask[0, 0] = mask[1, 1] = 255  # a diagonal pair: one region only with 8-connectivity
        score = rng.random((h, w)) + 0.6 * (mask > 0) * rng.random((h, w))
        if levels is not None:
            score = np.floor(score / score.max() * (levels - 1) + 0.5) / (levels - 1)
        maps.append(score.astype(np.float32))
        masks.append(mask)
    return maps, masks


# ---- equivalence -------------------------------------------------------------------------
@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
@pytest.mark.parametrize("levels", [None, 5, 20])
@pytest.mark.parametrize("seed", [0, 1])
def test_fast_au_pro_equals_literal(seed, levels, limit):
    maps, masks = random_case(seed, levels)
    assert abs(au_pro(maps, masks, limit=limit) - literal_au_pro(maps, masks, limit)) < 1e-6


@pytest.mark.parametrize("levels", [None, 5])
def test_pixel_metrics_au_pro_equals_literal(levels):
    # pixel_metrics takes the fully sorted path; au_pro the partition path
    maps, masks = random_case(7, levels)
    assert abs(pixel_metrics(maps, masks, pro_limit=0.3)["au_pro"] - literal_au_pro(maps, masks, 0.3)) < 1e-6


def test_limit_landing_exactly_on_a_curve_point():
    # 80 normal pixels: FPR = 0.25 and 0.3 are exact curve points (no interpolation)
    rng = np.random.default_rng(3)
    score = rng.random((10, 10)).astype(np.float32)
    mask = np.zeros((10, 10), bool)
    mask[2:6, 2:7] = True
    for limit in (0.25, 0.3):
        fpr, _ = literal_pro_curve([score], [mask])
        assert limit in fpr
        assert abs(au_pro([score], [mask], limit) - literal_au_pro([score], [mask], limit)) < 1e-6


def test_float64_stacked_array_and_none_masks():
    maps, masks = random_case(5, 20, n_images=4)
    h, w = 24, 30
    stacked = np.stack([np.resize(m, (h, w)).astype(np.float64) for m in maps])
    gts = [None if not m.any() else np.resize(m, (h, w)) for m in masks]
    assert gts[0] is None
    expected = literal_au_pro(stacked, gts, 0.3)
    assert abs(au_pro(stacked, gts, 0.3) - expected) < 1e-6


# ---- the definition itself, by hand ------------------------------------------------------------
def test_hand_computed_values():
    # scores 6..1, anomalous pixels 6 and 4 (two one-pixel regions), 4 normal pixels
    score = np.array([[6, 5, 4, 3, 2, 1]], dtype=np.float32)
    mask = np.array([[1, 0, 1, 0, 0, 0]], dtype=bool)
    # curve (0,0) (0,.5) (.25,.5) (.25,1) (.5,1) ... (1,1)
    assert au_pro([score], [mask], limit=1.0) == pytest.approx(0.875, abs=1e-12)
    assert au_pro([score], [mask], limit=0.3) == pytest.approx((0.125 + 0.05) / 0.3, abs=1e-12)


def test_ties_are_one_threshold():
    # anomalous and normal pixel tied at 2: one point (.5, .5), not a step
    score = np.array([[2, 2, 1, 1]], dtype=np.float32)
    mask = np.array([[1, 0, 1, 0]], dtype=bool)
    assert au_pro([score], [mask], limit=1.0) == pytest.approx(0.5, abs=1e-12)
    assert au_pro([score], [mask], limit=0.3) == pytest.approx(0.15, abs=1e-12)


def test_regions_are_eight_connected():
    # (0,0) touches (1,1) diagonally: one region of 3 pixels (two regions with 4-connectivity
    # would give 0.5). Only the pixel at 9 is above every normal pixel.
    score = np.array([[9, 8, 7], [6, 0.5, 0.4], [3, 2, 1]], dtype=np.float32)
    mask = np.zeros((3, 3), bool)
    mask[0, 0] = mask[1, 1] = mask[1, 2] = True
    assert au_pro([score], [mask], limit=1.0) == pytest.approx(1 / 3, abs=1e-12)


def test_masks_0_255_same_as_bool_and_inputs_untouched():
    maps, masks = random_case(2, 5)
    before = [m.copy() for m in maps]
    assert au_pro(maps, masks) == au_pro(maps, [m > 0 for m in masks])
    assert all(np.array_equal(a, b) for a, b in zip(maps, before))


def test_pro_curve_integrates_to_au_pro():
    maps, masks = random_case(4, None)
    for limit in (0.05, 0.3):
        fpr, pro = pro_curve(maps, masks, limit=limit, max_points=None)
        assert fpr[0] == 0 and pro[0] == 0 and fpr[-1] == limit
        assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0)
        assert np.trapezoid(pro, fpr) / limit == pytest.approx(au_pro(maps, masks, limit), abs=1e-9)
        thin_fpr, thin_pro = pro_curve(maps, masks, limit=limit, max_points=50)
        assert len(thin_fpr) <= 50 and thin_fpr[-1] == limit and thin_pro[-1] == pro[-1]


# ---- bad input -------------------------------------------------------------------------------
def test_bad_inputs_say_what_is_wrong():
    maps, masks = random_case(0, None, n_images=3)
    with pytest.raises(MetricsError, match="no anomalous pixel"):
        au_pro(maps, [np.zeros_like(m) for m in masks])
    with pytest.raises(MetricsError, match=r"masks\[1\].*shape"):
        au_pro(maps, [masks[0], masks[1][:-1], masks[2]])
    with pytest.raises(MetricsError, match=r"maps\[2\].*NaN"):
        au_pro(maps[:2] + [np.full((4, 4), np.nan)], masks[:2] + [None])
    with pytest.raises(MetricsError, match="limit"):
        au_pro(maps, masks, limit=0)
    with pytest.raises(MetricsError, match="numbers of images"):
        au_pro(maps, masks[:2])


def test_defects_scored_below_every_cut():
    # a detector that misses: every anomalous pixel scores below the normal ones
    maps, masks = random_case(6, 20)
    inverted = [np.where(m > 0, -1.0 - s, s).astype(np.float32) for s, m in zip(maps, masks)]
    for limit in (0.05, 1.0):
        fast = au_pro(inverted, masks, limit)
        assert abs(fast - literal_au_pro(inverted, masks, limit)) < 1e-6
    assert au_pro(inverted, masks, 0.05) == 0.0


@pytest.mark.parametrize("levels", [3, 50, None])
def test_normal_scores_from_cut_keeps_every_tie(levels):
    from uadflows.metrics.aupro import normal_scores_from_cut

    rng = np.random.default_rng(levels or 0)
    negatives = rng.random(5000).astype(np.float32)
    if levels:
        negatives = np.floor(negatives * levels).astype(np.float32)
    for count in (1, 700, 1500, 5000):
        expected = np.sort(negatives)
        expected = expected[expected >= expected[-count]]
        shuffled = rng.permutation(negatives)
        np.testing.assert_array_equal(normal_scores_from_cut(shuffled, count, is_sorted=False), expected)
        presorted = normal_scores_from_cut(np.sort(negatives), count, is_sorted=True)
        np.testing.assert_array_equal(presorted, expected)
