"""MSFlow's fusion flow: a per-scale random permutation, then one coupling layer whose
scale/shift nets see every scale at once (`models/freia_utils.py`, `flow_models.py`)."""

from __future__ import annotations

import FrEIA.modules as Fm
import torch
import torch.nn.functional as F
from torch import nn

# The original writes the atan soft clamp as clamp * 0.636 * atan(s / clamp), 0.636 being
# its rounding of 2/pi; kept so the clamp bound matches its checkpoints' behaviour.
_ATAN_SCALE = 0.636


class CrossScaleMixer(nn.Module):
    """Pools every scale to the last (smallest) map, mixes them with
    conv3x3-LayerNorm-ReLU-conv3x3-ReLU (hidden = total channels // 4), upsamples each
    scale's share back (bilinear, align_corners=True) and adds it to that scale's input."""

    def __init__(self, channels: list[int]):
        super().__init__()
        total = sum(channels)
        hidden = max(1, total // 4)
        self.channels = list(channels)
        self.conv1 = nn.Conv2d(total, hidden, 3, padding=1)
        self.norm = nn.LayerNorm(hidden)
        self.conv2 = nn.Conv2d(hidden, total, 3, padding=1)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        smallest = xs[-1].shape[-2:]
        mixed = torch.cat([F.adaptive_avg_pool2d(x, smallest) for x in xs], dim=1)
        mixed = self.conv1(mixed)
        mixed = self.norm(mixed.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        mixed = torch.relu(self.conv2(torch.relu(mixed)))
        shares = torch.split(mixed, self.channels, dim=1)
        return [
            x + F.interpolate(share, size=x.shape[-2:], mode="bilinear", align_corners=True)
            for x, share in zip(xs, shares)
        ]


class CrossScaleAffineNet(nn.Module):
    """Log-scale and shift for every scale's active half, from all scales' passive halves."""

    def __init__(self, channels_in: list[int], channels_out: list[int]):
        super().__init__()
        self.mixer = CrossScaleMixer(channels_in)
        self.to_scale = nn.ModuleList(
            nn.Conv2d(c_in, c_out, 3, padding=1) for c_in, c_out in zip(channels_in, channels_out)
        )
        self.to_shift = nn.ModuleList(
            nn.Conv2d(c_in, c_out, 3, padding=1) for c_in, c_out in zip(channels_in, channels_out)
        )

    def forward(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        mixed = self.mixer(xs)
        scales = [conv(m) for conv, m in zip(self.to_scale, mixed)]
        shifts = [conv(m) for conv, m in zip(self.to_shift, mixed)]
        return scales, shifts


class FusionCoupling(nn.Module):
    """Two affine half-couplings over all scales jointly (atan soft clamp).

    Each scale x_i is split into a (C_i // 2 channels) and b (the rest):
        a' = a * exp(g(s_b)) + t_b,   (s_b, t_b) = net_b(all b)
        b' = b * exp(g(s_a)) + t_a,   (s_a, t_a) = net_a(all a')
    with g(s) = clamp * 0.636 * atan(s / clamp). The log-determinant of scale i is the sum
    of g over the scale factors applied to scale i's channels; their sum over scales is the
    layer's total log-determinant.
    """

    def __init__(self, channels: list[int], clamp: float):
        super().__init__()
        self.first = [c // 2 for c in channels]
        self.second = [c - c // 2 for c in channels]
        self.clamp = clamp
        self.net_from_second = CrossScaleAffineNet(self.second, self.first)
        self.net_from_first = CrossScaleAffineNet(self.first, self.second)

    def _log_scale(self, s: torch.Tensor) -> torch.Tensor:
        return self.clamp * _ATAN_SCALE * torch.atan(s / self.clamp)

    def forward(
        self, xs: list[torch.Tensor], rev: bool = False
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        halves = [torch.split(x, [a, b], dim=1) for x, a, b in zip(xs, self.first, self.second)]
        firsts = [h[0] for h in halves]
        seconds = [h[1] for h in halves]
        if not rev:
            s_b, t_b = self.net_from_second(seconds)
            log_b = [self._log_scale(s) for s in s_b]
            firsts = [a * torch.exp(g) + t for a, g, t in zip(firsts, log_b, t_b)]
            s_a, t_a = self.net_from_first(firsts)
            log_a = [self._log_scale(s) for s in s_a]
            seconds = [b * torch.exp(g) + t for b, g, t in zip(seconds, log_a, t_a)]
            sign = 1.0
        else:  # undo the second half-coupling first, then the first
            s_a, t_a = self.net_from_first(firsts)
            log_a = [self._log_scale(s) for s in s_a]
            seconds = [(b - t) * torch.exp(-g) for b, g, t in zip(seconds, log_a, t_a)]
            s_b, t_b = self.net_from_second(seconds)
            log_b = [self._log_scale(s) for s in s_b]
            firsts = [(a - t) * torch.exp(-g) for a, g, t in zip(firsts, log_b, t_b)]
            sign = -1.0
        ys = [torch.cat([a, b], dim=1) for a, b in zip(firsts, seconds)]
        log_jac = [sign * (ga.sum(dim=(1, 2, 3)) + gb.sum(dim=(1, 2, 3))) for ga, gb in zip(log_a, log_b)]
        return ys, log_jac


class FusionFlow(nn.Module):
    """FrEIA `PermuteRandom` on each scale's channels, then the `FusionCoupling`.
    Permutations have log-determinant 0, so the per-scale log-dets are the coupling's."""

    def __init__(self, channels: list[int], clamp: float):
        super().__init__()
        self.permutations = nn.ModuleList(Fm.PermuteRandom([(c, 1, 1)]) for c in channels)
        self.coupling = FusionCoupling(list(channels), clamp)

    def forward(
        self, xs: list[torch.Tensor], rev: bool = False
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if not rev:
            xs = [perm([x])[0][0] for perm, x in zip(self.permutations, xs)]
            return self.coupling(xs)
        ys, log_jac = self.coupling(xs, rev=True)
        return [perm([y], rev=True)[0][0] for perm, y in zip(self.permutations, ys)], log_jac
