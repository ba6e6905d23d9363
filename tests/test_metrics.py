"""Image and pixel metrics against scikit-learn, resizing, mIoU and ``evaluate``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from uadflows.metrics import (
    MetricsError,
    au_pro,
    evaluate,
    image_metrics,
    mean_iou,
    pixel_metrics,
    roc_points,
    to_map_resolution,
    to_mask_resolution,
)


def brute_force_f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """Max F1 over every threshold 'score >= t', t each distinct score (no curve code)."""
    best = 0.0
    for t in np.unique(scores):
        predicted = scores >= t
        tp = np.count_nonzero(predicted & labels)
        if tp:
            best = max(best, 2 * tp / (np.count_nonzero(predicted) + np.count_nonzero(labels)))
    return best


def pixel_case(seed: int, levels: int | None, n_images: int = 5):
    rng = np.random.default_rng(seed)
    maps, masks = [], []
    for i in range(n_images):
        h, w = int(rng.integers(16, 30)), int(rng.integers(16, 30))
        mask = np.zeros((h, w), bool)
        if i % 2:
            y, x = int(rng.integers(0, h - 6)), int(rng.integers(0, w - 6))
            mask[y:y + 5, x:x + int(rng.integers(2, 6))] = True
        score = rng.random((h, w)) + 0.5 * mask * rng.random((h, w))
        if levels is not None:
            score = np.round(score / score.max() * (levels - 1)) / (levels - 1)
        maps.append(score.astype(np.float32))
        masks.append(mask)
    return maps, masks


def flat(items) -> np.ndarray:
    return np.concatenate([np.asarray(a).ravel() for a in items])


# ---- image level ---------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [None, 4])
def test_image_metrics_match_sklearn_and_brute_force(levels):
    rng = np.random.default_rng(levels or 0)
    labels = rng.random(40) < 0.4
    scores = rng.random(40) + 0.4 * labels
    if levels:
        scores = np.round(scores * levels)
    m = image_metrics(labels.astype(int), scores)
    assert m["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert m["image_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert m["image_f1_max"] == pytest.approx(brute_force_f1_max(labels, scores), abs=1e-12)
    assert all(type(v) is float for v in m.values())


def test_image_metrics_reject_bad_labels():
    with pytest.raises(MetricsError, match="both normal and anomalous"):
        image_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(MetricsError, match="labels"):
        image_metrics([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(MetricsError, match="3 values but scores has 2"):
        image_metrics([0, 1, 1], [0.1, 0.2])


# ---- pixel level ---------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [None, 5, 20])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pixel_metrics_match_sklearn(levels, dtype):
    maps, masks = pixel_case(1, levels)
    maps = [m.astype(dtype) for m in maps]
    y, s = flat(masks), flat(maps)
    m = pixel_metrics(maps, masks)
    assert m["pixel_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert m["pixel_ap"] == pytest.approx(average_precision_score(y, s), abs=1e-9)
    assert m["pixel_f1_max"] == pytest.approx(brute_force_f1_max(y, s), abs=1e-9)
    assert set(m) == {"pixel_auroc", "pixel_ap", "pixel_f1_max", "au_pro"}
    assert all(type(v) is float for v in m.values())


def test_pixel_metrics_on_a_stacked_array_with_0_255_masks():
    maps, masks = pixel_case(2, None, n_images=4)
    stacked = np.stack([m[:16, :16] for m in maps])
    gt = np.stack([m[:16, :16] for m in masks]).astype(np.uint8) * 255
    gt[1, 3:6, 3:6] = 255
    m = pixel_metrics(stacked, gt)
    assert m["pixel_auroc"] == pytest.approx(roc_auc_score(gt.ravel() > 0, stacked.ravel()), abs=1e-9)
    assert m["au_pro"] == au_pro(stacked, gt)


def test_roc_points_pixel_and_image_level():
    maps, masks = pixel_case(3, 20)
    fpr, tpr = roc_points(masks, maps, max_points=None)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(flat(masks), flat(maps)), abs=1e-9)
    thin_fpr, _ = roc_points(masks, maps, max_points=10)
    assert len(thin_fpr) <= 10 and thin_fpr[0] == 0 and thin_fpr[-1] == 1

    labels, scores = np.array([0, 0, 1, 1, 0, 1]), np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    fpr, tpr = roc_points(labels, scores)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(labels, scores))


# ---- resizing -------------------------------------------------------------------------------
def test_to_mask_resolution_is_bilinear_half_pixel():
    # a 2-wide ramp 0 -> 1 upsampled x2 with pixel-centre (align_corners=False) sampling
    score_map = np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    big = to_mask_resolution([score_map], [np.zeros((4, 4), bool)])[0]
    assert big.shape == (4, 4) and big.dtype == np.float32
    np.testing.assert_allclose(big[0], [0.0, 0.25, 0.75, 1.0])
    sizes = to_mask_resolution([score_map, score_map], [np.zeros((3, 5)), None], mask_shapes=[None, (6, 2)])
    assert [s.shape for s in sizes] == [(3, 5), (6, 2)]


@pytest.mark.parametrize("h, w, H, W", [(16, 16, 64, 64), (4, 4, 7, 9), (3, 5, 6, 2), (17, 23, 200, 301), (64, 64, 32, 48)])
def test_numpy_resizing_follows_torch_interpolate(h, w, H, W):
    """Evaluation resizes without torch (start-up): same rules as F.interpolate."""
    import torch
    import torch.nn.functional as F

    from uadflows.metrics.resize import resize_mask, upsample_map

    rng = np.random.default_rng(h * W)
    m = rng.random((h, w)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(m)[None, None], size=(H, W), mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(upsample_map(m, (H, W)), ref.numpy(), atol=1e-5, rtol=0)
    mask = rng.random((H, W)) > 0.7
    for size in ((h, w), (H + 13, 3 * W)):
        ref = F.interpolate(torch.from_numpy(mask.astype(np.uint8))[None, None], size=size, mode="nearest-exact")
        np.testing.assert_array_equal(resize_mask(mask, size), ref[0, 0].numpy().astype(bool))


def test_to_map_resolution_is_nearest_and_binarises():
    mask = np.zeros((4, 4), np.uint8)
    mask[:2, :2] = 255
    small = to_map_resolution(np.zeros((2, 2, 2), np.float32), [mask, None])
    assert small.dtype == bool and small.shape == (2, 2, 2)
    np.testing.assert_array_equal(small[0], [[True, False], [False, False]])
    assert not small[1].any()


# ---- mIoU -------------------------------------------------------------------------------------
def test_mean_iou_by_hand():
    gt = np.zeros((4, 4), bool)
    gt[:2, :2] = True  # 4 pixels
    pred = np.zeros((4, 4), bool)
    pred[:2, :3] = True  # 6 pixels, 4 shared -> 4/6
    empty = np.zeros((4, 4), bool)
    assert mean_iou([pred, empty, empty], [gt, None, gt]) == pytest.approx((4 / 6 + 1.0 + 0.0) / 3)
    with pytest.raises(MetricsError, match=r"masks\[0\].*shape"):
        mean_iou([pred], [gt[:3]])


# ---- evaluate ---------------------------------------------------------------------------------
def eval_case():
    rng = np.random.default_rng(9)
    labels = np.array([0, 1, 0, 1, 1])
    low = rng.random((5, 8, 8)).astype(np.float32)
    masks = []
    for i, size in enumerate([(20, 24), (16, 16), (18, 20), (24, 20), (16, 18)]):
        mask = np.zeros(size, np.uint8)
        if labels[i]:
            mask[4:9, 5:11] = 255
            low[i, 2:4, 2:5] += 1.0
        masks.append(mask)
    return labels, low.max(axis=(1, 2)), low, masks


def test_evaluate_at_original_resolution_matches_the_parts():
    labels, scores, maps, masks = eval_case()
    seg = maps > 1.0
    out = evaluate(labels, scores, maps, masks, segmentations=seg)
    expected = pixel_metrics(to_mask_resolution(maps, masks), masks)
    assert {k: out[k] for k in expected} == expected
    # the segmentation is resized (nearest) to each mask's size
    seg_at_masks = to_map_resolution([m.astype(np.float32) for m in masks], seg)
    assert out["miou"] == mean_iou(seg_at_masks, masks) and 0.0 < out["miou"] < 1.0
    assert out["resolution"] == "original" and out["pro_limit"] == 0.3
    assert out["image_auroc"] == image_metrics(labels, scores)["image_auroc"]
    json.dumps(out, allow_nan=False)  # plain, finite floats


def test_evaluate_at_model_resolution_and_good_images_as_none():
    labels, scores, maps, masks = eval_case()
    out = evaluate(labels, scores, maps, masks, resolution="model", pro_limit=0.1)
    assert out["resolution"] == "model" and out["pro_limit"] == 0.1
    small = to_map_resolution(maps, masks)
    assert out["au_pro"] == au_pro(maps, small, limit=0.1)
    assert out["pixel_auroc"] == pytest.approx(roc_auc_score(small.ravel(), maps.ravel()), abs=1e-9)

    as_none = [None if not labels[i] else m for i, m in enumerate(masks)]
    shapes = [m.shape for m in masks]
    with_none = evaluate(labels, scores, maps, as_none, mask_shapes=shapes)
    assert with_none == evaluate(labels, scores, maps, masks)
    with pytest.raises(MetricsError, match=r"masks\[0\].*mask_shapes"):
        evaluate(labels, scores, maps, as_none)


def test_evaluate_without_ground_truth_and_bad_options():
    labels, scores, maps, masks = eval_case()
    out = evaluate(labels, scores, maps, None)
    assert set(out) == {"image_auroc", "image_ap", "image_f1_max", "resolution", "pro_limit"}
    with pytest.raises(MetricsError, match="resolution"):
        evaluate(labels, scores, maps, masks, resolution="256")
    with pytest.raises(MetricsError, match="numbers of images"):
        evaluate(labels, scores, maps[:4], masks)
    with pytest.raises(MetricsError, match="pro_limit"):
        evaluate(labels, scores, maps, masks, pro_limit=1.5)
