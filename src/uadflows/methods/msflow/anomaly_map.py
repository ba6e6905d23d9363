"""MSFlow's two aggregations of per-scale log-likelihoods (`post_process.py`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _per_image_max(maps: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B, 1, 1) maximum over each image's pixels."""
    return maps.amax(dim=(-2, -1), keepdim=True)


def _upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=True)[:, 0]


def log_likelihood_maps(z: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per scale log p = -0.5 * mean over channels of z^2, (B, h_s, w_s), in float32."""
    return [-0.5 * zs.float().pow(2).mean(dim=1) for zs in z]


def msflow_anomaly_maps(
    z: list[torch.Tensor], size: tuple[int, int], top_k: float = 0.03
) -> dict[str, torch.Tensor]:
    """Higher = more anomalous; every normalisation is per image, so an image's result
    does not depend on the others in its batch.

    map: the "add" map (the paper's pixel map): per scale exp(logp - max logp), upsampled
        and summed over scales; anomaly = its per-image max minus it.
    map_mul: the "mul" map: summed upsampled log p, minus its max, exp; anomaly = max - it
        (= 1 - it). The original computes AU-PRO on this map and pixel AUROC on "map".
    score: the paper's image score: mean of the top `top_k` fraction of "map_mul" pixels.
    score_max: max of "map" (an extra, not in the paper).
    """
    height, width = size
    logps = log_likelihood_maps(z)
    probs_add = sum(_upsample(torch.exp(lp - _per_image_max(lp)), size) for lp in logps)
    map_add = _per_image_max(probs_add) - probs_add

    logp_sum = sum(_upsample(lp, size) for lp in logps)
    probs_mul = torch.exp(logp_sum - _per_image_max(logp_sum))
    map_mul = _per_image_max(probs_mul) - probs_mul

    k = max(1, int(height * width * top_k))  # the original's int(); at least one pixel
    score = map_mul.flatten(1).topk(k, dim=1).values.mean(dim=1)
    return {
        "map": map_add,
        "map_mul": map_mul,
        "score": score,
        "score_max": map_add.flatten(1).amax(dim=1),
    }
