"""Nearest-neighbour distances and the kNN floor's map and image score."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nearest_distances(queries: torch.Tensor, bank: torch.Tensor, chunk: int = 2**24) -> torch.Tensor:
    """(Q, C) queries, (M, C) bank -> (Q,) Euclidean distance of each query to its nearest
    bank row, in float32, computed block by block (at most ``chunk`` distances at once)."""
    if bank.shape[0] == 0:
        raise ValueError("knn: the memory bank is empty; fit the model on training features first")
    if queries.shape[1] != bank.shape[1]:
        raise ValueError(f"knn: queries have {queries.shape[1]} channels, the memory bank {bank.shape[1]}")
    queries = queries.float()
    rows = max(1, chunk // bank.shape[0])
    cols = max(1, chunk // min(rows, queries.shape[0]))
    best = torch.empty(queries.shape[0], device=queries.device)
    for q0 in range(0, queries.shape[0], rows):
        q = queries[q0 : q0 + rows]
        q_sq = q.pow(2).sum(dim=1, keepdim=True)
        nearest = torch.full((q.shape[0],), float("inf"), device=queries.device)
        for b0 in range(0, bank.shape[0], cols):
            b = bank[b0 : b0 + cols].float()
            # |q - b|^2 = |q|^2 - 2 q.b + |b|^2, one matrix product per block
            sq = (q_sq - 2.0 * q @ b.T + b.pow(2).sum(dim=1)).amin(dim=1)
            nearest = torch.minimum(nearest, sq)
        best[q0 : q0 + rows] = nearest.clamp_min(0.0).sqrt()
    return best


def knn_anomaly_maps(distances: list[torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Per-scale distance maps (B, h_s, w_s) -> the map: each scale upsampled (bilinear) to
    ``size`` and averaged over scales, per image; image score: the map's maximum."""
    upsampled = [F.interpolate(d[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
                 for d in distances]
    anomaly = torch.stack(upsampled).mean(dim=0)
    return {"map": anomaly, "score": anomaly.flatten(1).amax(dim=1)}
