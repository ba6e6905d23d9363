"""The trainable ``LayerNorm([C, H, W])`` some flows put before the flow, in three modes.

FastFlow (gathierry/FastFlow, fastflow.py: ``nn.LayerNorm([C, H, W], elementwise_affine=True)``
before each scale's flow) and U-Flow's official CNN path normalise the features and then
apply a trainable affine ``w * x + b`` that is *not* counted in the flow's log-determinant.
Shrinking ``w`` then shrinks the flow's input for free: the flow can scale it back up and
collect ``sum log(1/|w|)`` of log-det without changing its latents, so the objective has no
lower bound (issue 22; gathierry/FastFlow#4 "AUROC peaks early then drops").

``faithful``   the recipe as published: affine LayerNorm, its Jacobian not counted.
``bounded``    the same LayerNorm with its affine part counted as a flow step:
               log|det| = sum over the C*H*W normalised elements of log|w| (a diagonal
               Jacobian), added to every sample's log-det, so the density is that of the
               normalised features and shrinking ``w`` is no longer rewarded.
``no-affine``  the normalisation alone (no trainable parameters, nothing to shrink).
"""

from __future__ import annotations

import torch
from torch import nn

from uadflows.methods.norm_modes import NORMS, check_norm


class PreFlowLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm(shape)`` in one of ``NORMS``; ``log_det()`` is its contribution to
    every sample's log|det J| (zero unless ``bounded``). State dict keys are LayerNorm's."""

    def __init__(self, shape: list[int] | tuple[int, ...], norm: str = "faithful"):
        self.norm = check_norm(norm, "PreFlowLayerNorm")
        super().__init__(list(shape), elementwise_affine=norm != "no-affine")

    def log_det(self) -> torch.Tensor | None:
        """sum log|w| over the normalised elements for ``bounded``; None otherwise."""
        if self.norm != "bounded":
            return None
        return torch.log(torch.abs(self.weight)).sum()

    @torch.no_grad()
    def scale(self) -> float | None:
        """Mean of the affine weights (1.0 at initialisation); None without affine."""
        return None if self.weight is None else float(self.weight.mean())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, norm={self.norm}"


__all__ = ["NORMS", "PreFlowLayerNorm", "check_norm"]
