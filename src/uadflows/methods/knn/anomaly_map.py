"""Nearest-neighbour distances and the kNN floor's map and image score."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nearest_distances(queries: torch.Tensor, bank: torch.Tensor, chunk: int = 2**20) -> torch.Tensor:
    """(Q, C) queries, (M, C) bank -> (Q,) Euclidean distance of each query to its nearest
    bank row, in float32, computed block by block (at most ``chunk`` distances at once)."""
    if bank.shape[0] == 0:
        raise ValueError("knn: the memory bank is empty; fit the model on training features first")
    if queries.shape[1] != bank.shape[1]:
        raise ValueError(f"knn: queries have {queries.shape[1]} channels, the memory bank {bank.shape[1]}")
    queries = queries.float()
    rows = min(queries.shape[0], 4096)
    cols = max(1, chunk // rows)
    # |q - b|^2 = |q|^2 + (|b|^2 - 2 q.b): |q|^2 is constant along a row, so it is added
    # after the minimum; the bracket is one addmm per block.
    nearest = torch.full((queries.shape[0],), float("inf"), device=queries.device)
    for b0 in range(0, bank.shape[0], cols):
        b = bank[b0 : b0 + cols].float()
        b_sq = b.pow(2).sum(dim=1)
        for q0 in range(0, queries.shape[0], rows):
            part = torch.addmm(b_sq, queries[q0 : q0 + rows], b.T, alpha=-2.0).amin(dim=1)
            nearest[q0 : q0 + rows] = torch.minimum(nearest[q0 : q0 + rows], part)
    return (nearest + queries.pow(2).sum(dim=1)).clamp_min(0.0).sqrt()


def knn_anomaly_maps(distances: list[torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Per-scale distance maps (B, h_s, w_s) -> the map: each scale upsampled (bilinear) to
    ``size`` and averaged over scales, per image; image score: the map's maximum."""
    upsampled = [F.interpolate(d[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
                 for d in distances]
    anomaly = torch.stack(upsampled).mean(dim=0)
    return {"map": anomaly, "score": anomaly.flatten(1).amax(dim=1)}
