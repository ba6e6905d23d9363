"""FastFlow's anomaly map and image score from its latents."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fastflow_anomaly_maps(z: list[torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """map = 1 - mean over scales of exp(-0.5 * mean_c z^2) (bilinear to ``size``), in
    [0, 1]: the reproduction's -prob plus one, so the same ranking; score = max."""
    probs = []
    for zs in z:
        prob = torch.exp(-0.5 * zs.pow(2).mean(dim=1, keepdim=True))
        probs.append(F.interpolate(prob, size=tuple(size), mode="bilinear", align_corners=False))
    amap = 1.0 - torch.stack(probs, dim=0).mean(dim=0)[:, 0]
    return {"map": amap, "score": amap.flatten(1).amax(dim=1)}
