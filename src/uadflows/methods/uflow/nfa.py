"""U-Flow's a-contrario segmentation: a -log10 NFA map from the latents.

Background model H0: for normal images a perfect flow gives z ~ N(0, I), independent across
pixels and scales, so at scale s each pixel's squared norm ||z_i||^2 follows chi2(C_s).

Candidate regions (per image and scale): the 4-connected components of the upper level sets
of the per-pixel score mean_c z^2, i.e. the nodes of its component tree (skimage max-tree).

Statistic of a region R at level t (every pixel of R has ||z_i||^2 >= tau = C_s t, and tau is
attained in R): P_H0(R) = P(chi2(C_s) >= tau) ^ |R|, pixels being independent under H0. The
one-pixel tail is the paper's Chernoff bound ``(u e^(1-u))^(C/2)`` with u = tau / C, used
only where it is a bound (u > 1; below, we use the trivial bound 1, while the official code
lets the formula fall further, which its tree reduction in practice never selects), or the
exact chi-square survival function.

Number of tests: every region that could be tested is a polyomino (an edge-connected pixel
set); at scale s with N_s = H_s W_s pixels there are at most N_s * A(n) of size n, A(n) the
number of fixed polyominoes, approximated as in the paper by alpha beta^n / n (alpha =
0.316915, beta = 4.062570, Jensen's asymptotics). Summed over every size and scale:
``N_T = sum_s N_s sum_{n=1}^{N_s} alpha beta^n / n``; log10 N_T is about 0.609 N_finest.

NFA(R) = N_T P_H0(R). Since P_H0(R) is the p-value of R's statistic, for any fixed polyomino
P(NFA(R) < eps) <= eps / N_T, and the expected number of regions with NFA < 1 in an H0
image is at most 1, whichever regions the tree proposes.

Which regions are reported: the official tree reduction (mtailanian/uflow src/nfa_tree.py):
each chain of single-child nodes keeps its most significant node; a bifurcation whose children
have all been reduced to single nodes replaces them when its log-probability is <= theirs;
this repeats bottom-up. Pixels of a kept region carry its log10 P_H0, other pixels 0. Per
image, the scale maps are upsampled (bilinear) to the output size and the minimum over
scales is taken, and the map returned is ``-log10 NFA = -(log10 N_T + log10 P)``.

Sign convention: positive values are significant; segmentation = (map > 0) = (NFA < 1).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import logsumexp
from scipy.stats import chi2
from skimage.morphology import max_tree

POLYOMINO_ALPHA = 0.316915
POLYOMINO_BETA = 4.062570
# "chernoff_unclamped": the official formula (mtailanian/uflow src/nfa_tree.py), also below the
# mean, where it is no bound and calls over-contracted regions (z^2 << 1) significant; kept
# only to measure that (benchmarks/uflow_fit.py).
TAILS = ("chernoff", "exact", "chernoff_unclamped")


def log10_number_of_tests(pixels_per_scale: Sequence[int]) -> float:
    """log10 of sum_s N_s sum_{n=1}^{N_s} alpha beta^n / n (see the module docstring)."""
    if len(pixels_per_scale) == 0:
        raise ValueError("log10_number_of_tests: need the pixel count of at least one scale")
    log_terms = []
    for n_pixels in pixels_per_scale:
        if int(n_pixels) != n_pixels or n_pixels < 1:
            raise ValueError(f"log10_number_of_tests: pixel counts must be positive integers, got {n_pixels!r}")
        sizes = np.arange(1, int(n_pixels) + 1, dtype=np.float64)
        log_terms.append(
            math.log(n_pixels) + math.log(POLYOMINO_ALPHA) + sizes * math.log(POLYOMINO_BETA) - np.log(sizes)
        )
    return float(logsumexp(np.concatenate(log_terms)) / math.log(10))


def log10_pixel_tail(squared_norms: np.ndarray, dof: int, tail: str = "chernoff") -> np.ndarray:
    """log10 P(chi2(dof) >= squared_norms) (``exact``) or of its Chernoff bound (``chernoff``)."""
    x = np.asarray(squared_norms, dtype=np.float64)
    if tail == "exact":
        return chi2.logsf(x, dof) / math.log(10)
    if tail not in TAILS:
        raise ValueError(f"unknown NFA tail {tail!r}; use one of {TAILS}")
    u = x / dof if tail == "chernoff_unclamped" else np.maximum(x / dof, 1.0)  # below the mean: P <= 1
    return -(dof / 2.0) * (u - 1.0 - np.log(u)) / math.log(10)


def region_log10_prob_map(z: np.ndarray, tail: str = "chernoff") -> np.ndarray:
    """One image, one scale: z (C, H, W) -> (H, W) log10 P_H0 of the kept region holding each
    pixel, 0 outside kept regions."""
    if z.ndim != 3:
        raise ValueError(f"region_log10_prob_map: expected latents (C, H, W), got shape {z.shape}")
    channels = z.shape[0]
    score = np.mean(np.asarray(z, dtype=np.float64) ** 2, axis=0)
    # A border below every score: skimage's max_tree fails on maps thinner than 3 pixels, and
    # the border only adds a root component above the image's own tree.
    padded = np.pad(score, 1, constant_values=-1.0)
    parent_img, order = max_tree(padded, connectivity=1)  # order: every parent before its children
    parent = parent_img.ravel()
    level = padded.ravel()
    n = level.size
    inside = np.zeros_like(padded, dtype=bool)
    inside[1:-1, 1:-1] = True
    inside = inside.ravel()

    # Canonical pixel of each pixel's component (the max-tree links equal-level pixels).
    canon = np.arange(n)
    for p in order[1:]:
        q = parent[p]
        if level[q] == level[p]:
            canon[p] = canon[q]
    nodes = order[canon[order] == order][1:]  # component-tree nodes, top-down, border excluded
    root = nodes[0]  # the whole image (its only child of the border component)
    node_parent = canon[parent]

    area = np.bincount(canon[inside], minlength=n)
    children: dict[int, list[int]] = {}
    for v in nodes[:0:-1]:  # bottom-up, root excluded
        area[node_parent[v]] += area[v]
        children.setdefault(int(node_parent[v]), []).append(int(v))
    log_prob = np.zeros(n)
    log_prob[nodes] = area[nodes] * log10_pixel_tail(channels * level[nodes], channels, tail)

    # Official reduction, bottom-up: a subtree either reduces to one node (best) or keeps a
    # bifurcation, whose reduced children are then final.
    single = np.zeros(n, dtype=bool)
    best = np.zeros(n, dtype=np.int64)
    kept: list[int] = []
    for v in nodes[::-1]:
        kids = children.get(int(v), [])
        if not kids:
            single[v], best[v] = True, v
        elif len(kids) == 1:
            c = kids[0]
            single[v] = single[c]
            if single[c]:
                best[v] = v if log_prob[v] < log_prob[best[c]] else best[c]
        else:
            if all(single[c] for c in kids) and log_prob[v] <= min(log_prob[best[c]] for c in kids):
                single[v], best[v] = True, v
            else:
                kept.extend(int(best[c]) for c in kids if single[c])
    if single[root]:
        kept.append(int(best[root]))

    # Kept regions are disjoint subtrees: paint each with its log-probability, top-down.
    is_kept = np.zeros(n, dtype=bool)
    is_kept[kept] = True
    node_value = np.zeros(n)
    for v in nodes:
        if is_kept[v]:
            node_value[v] = log_prob[v]
        elif v != root:
            node_value[v] = node_value[node_parent[v]]
    return node_value[canon].reshape(padded.shape)[1:-1, 1:-1]


def log_nfa_map(
    z: Sequence[torch.Tensor],
    size: tuple[int, int],
    tail: str = "chernoff",
    log10_n_tests: float | None = None,
) -> torch.Tensor:
    """Latents (one (B, C_s, H_s, W_s) tensor per scale) -> -log10 NFA, (B, H, W) float32 on
    the CPU at ``size``. ``log10_n_tests`` overrides N_T (default: the module's count)."""
    if tail not in TAILS:
        raise ValueError(f"unknown NFA tail {tail!r}; use one of {TAILS}")
    if len(z) == 0:
        raise ValueError("log_nfa_map: need latents of at least one scale")
    if log10_n_tests is None:
        log10_n_tests = log10_number_of_tests([int(zs.shape[-2] * zs.shape[-1]) for zs in z])
    latents = [zs.detach().cpu().double().numpy() for zs in z]
    batch = latents[0].shape[0]
    maps = []
    for b in range(batch):
        per_scale = [
            F.interpolate(
                torch.from_numpy(region_log10_prob_map(zs[b], tail))[None, None],
                size=tuple(size),
                mode="bilinear",
                align_corners=False,
            )[0, 0]
            for zs in latents
        ]
        maps.append(torch.stack(per_scale).amin(0))
    log10_prob = torch.stack(maps)
    return (-(log10_n_tests + log10_prob)).float()
