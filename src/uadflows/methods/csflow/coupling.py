"""CS-Flow's cross-scale flow (Rudolph et al., WACV 2022, arXiv 2110.02855, Sec. 3.2;
marco-rudolph/cs-flow freia_funcs.py and model.py:14-37). Written from that code, not copied.

Every block is a fixed random channel permutation of each scale followed by one coupling
that transforms all scales at once: the subnet of each half sees the other half of *every*
scale through convolutions between neighbouring scales (strided down, bilinear up).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def soft_clamp(s: torch.Tensor, clamp: float) -> torch.Tensor:
    """The log-scale ``clamp * 0.636 * atan(s / clamp)`` (freia_funcs.py:181-185; 0.636 is
    the original's rounding of 2/pi)."""
    return clamp * 0.636 * torch.atan(s / clamp)


class CrossConvolutions(nn.Module):
    """The subnet (freia_funcs.py:23-109), for any number of scales (the original: 3).

    Scale s: conv_k(in -> hidden), LeakyReLU -> y_s; output_s = conv_k(y_s -> out)
    + conv_k(bilinear x2 of y_{s+1}) + strided conv_k(y_{s-1}), each term where that
    neighbour exists, times a learnt gamma_s that starts at 0. Every conv has a bias and
    zero "same" padding.
    """

    def __init__(self, n_scales: int, in_channels: int, out_channels: int, hidden: int,
                 kernel_size: int, leaky_slope: float = 0.1, use_gamma: bool = True):
        super().__init__()
        pad = kernel_size // 2

        def conv(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
            return nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=pad)

        self.n_scales = n_scales
        self.leaky_slope = leaky_slope
        self.use_gamma = use_gamma
        self.inner = nn.ModuleList(conv(in_channels, hidden) for _ in range(n_scales))
        self.outer = nn.ModuleList(conv(hidden, out_channels) for _ in range(n_scales))
        self.up = nn.ModuleList(conv(hidden, out_channels) for _ in range(n_scales - 1))  # s+1 -> s
        self.down = nn.ModuleList(conv(hidden, out_channels, 2) for _ in range(n_scales - 1))  # s -> s+1
        self.gamma = nn.Parameter(torch.zeros(n_scales))

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        ys = [F.leaky_relu(conv(x), self.leaky_slope) for conv, x in zip(self.inner, xs)]
        out = []
        for s, y in enumerate(ys):
            o = self.outer[s](y)
            if s + 1 < self.n_scales:
                o = o + self.up[s](F.interpolate(ys[s + 1], scale_factor=2, mode="bilinear", align_corners=False))
            if s > 0:
                o = o + self.down[s - 1](ys[s - 1])
            out.append(o * self.gamma[s] if self.use_gamma else o)
        return out


class CrossScaleCoupling(nn.Module):
    """Affine coupling on all scales at once (freia_funcs.py:156-253, ``parallel_glow_coupling_layer``).

    Channels split into x1 (first C // 2) and x2. Forward: (s, t) = net2(x2 of every scale),
    y1 = exp(c(s)) x1 + t; then (s, t) = net1(y1 of every scale), y2 = exp(c(s)) x2 + t, with c
    the soft clamp. Returns the outputs and each scale's log-det (B,).
    """

    def __init__(self, n_scales: int, channels: int, hidden: int, kernel_size: int, clamp: float,
                 leaky_slope: float = 0.1, use_gamma: bool = True):
        super().__init__()
        self.split1, self.split2 = channels // 2, channels - channels // 2
        self.clamp = clamp
        args = dict(n_scales=n_scales, hidden=hidden, kernel_size=kernel_size, leaky_slope=leaky_slope, use_gamma=use_gamma)
        self.net1 = CrossConvolutions(in_channels=self.split1, out_channels=2 * self.split2, **args)
        self.net2 = CrossConvolutions(in_channels=self.split2, out_channels=2 * self.split1, **args)

    def _affine(self, net: nn.Module, conditions: list[torch.Tensor], n: int):
        """(log-scale, shift) pairs for ``n`` channels per scale."""
        return [(soft_clamp(r[:, :n], self.clamp), r[:, n:]) for r in net(conditions)]

    def forward(self, xs: Sequence[torch.Tensor], rev: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        x1 = [x[:, : self.split1] for x in xs]
        x2 = [x[:, self.split1 :] for x in xs]
        if not rev:
            st2 = self._affine(self.net2, x2, self.split1)
            y1 = [torch.exp(s) * a + t for a, (s, t) in zip(x1, st2)]
            st1 = self._affine(self.net1, y1, self.split2)
            y2 = [torch.exp(s) * b + t for b, (s, t) in zip(x2, st1)]
            sign = 1.0
        else:  # xs are latents: undo the second half first
            st1 = self._affine(self.net1, x1, self.split2)
            y2 = [(b - t) * torch.exp(-s) for b, (s, t) in zip(x2, st1)]
            st2 = self._affine(self.net2, y2, self.split1)
            y1 = [(a - t) * torch.exp(-s) for a, (s, t) in zip(x1, st2)]
            sign = -1.0
        log_jac = [sign * (sa.flatten(1).sum(1) + sb.flatten(1).sum(1)) for (sa, _), (sb, _) in zip(st1, st2)]
        return [torch.cat(pair, 1) for pair in zip(y1, y2)], log_jac


class CrossScaleFlow(nn.Module):
    """``n_blocks`` x (permute every scale, cross-scale coupling) (model.py:14-37).

    Block k's permutations are the original's: ``np.random.seed(k)``, then one
    ``np.random.permutation(C)`` per scale in scale order (freia_funcs.py:112-146).
    """

    def __init__(self, n_scales: int, channels: int, hidden: int, kernel_sizes: Sequence[int], clamp: float,
                 leaky_slope: float = 0.1, use_gamma: bool = True):
        super().__init__()
        self.n_scales = n_scales
        self.couplings = nn.ModuleList(
            CrossScaleCoupling(n_scales, channels, hidden, k, clamp, leaky_slope, use_gamma) for k in kernel_sizes
        )
        for k in range(len(kernel_sizes)):
            rng = np.random.RandomState(k)  # the legacy generator np.random.seed(k) sets
            perms = torch.from_numpy(np.stack([rng.permutation(channels) for _ in range(n_scales)]))
            self.register_buffer(f"perm_{k}", perms)
            self.register_buffer(f"perm_inv_{k}", torch.argsort(perms, dim=1))

    def forward(self, xs: Sequence[torch.Tensor], rev: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Features -> latents (``rev=True``: latents -> features); log-det per scale (B,)."""
        xs = list(xs)
        total = [xs[0].new_zeros(xs[0].shape[0]) for _ in xs]
        order = range(len(self.couplings))
        for k in reversed(order) if rev else order:
            perm, perm_inv = getattr(self, f"perm_{k}"), getattr(self, f"perm_inv_{k}")
            if not rev:
                xs = [x[:, perm[s]] for s, x in enumerate(xs)]
            xs, log_jac = self.couplings[k](xs, rev=rev)
            if rev:
                xs = [x[:, perm_inv[s]] for s, x in enumerate(xs)]
            total = [a + b for a, b in zip(total, log_jac)]
        return xs, total
