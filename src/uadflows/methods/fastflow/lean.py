"""``LeanAllInOneBlock``: FrEIA's AllInOneBlock with a gather for its permutation and a
cheaper scoring pass (issue 9; measured in docs/benchmarks.md)."""

from __future__ import annotations

import math
from typing import Any

import FrEIA.modules as Fm
import torch
import torch.nn.functional as F
from torch import nn

LOG2E = 1.0 / math.log(2.0)


class LeanAllInOneBlock(Fm.AllInOneBlock):
    """FrEIA's AllInOneBlock with its hard permutation applied as a channel gather instead
    of a dense C x C 1x1 convolution (B*H*W*C^2 multiply-adds), and, without gradients
    (scoring), the whole step computed in fewer, cheaper passes (see ``forward``). Same
    parameters and state dict as the parent, so weights move freely between the two."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.w_perm is None or self.GIN or self.reverse_pre_permute:
            raise ValueError("LeanAllInOneBlock: needs a fixed permutation (no Householder), no GIN and no reverse_permutation")
        s = self.subnet
        if not (isinstance(s, nn.Sequential) and len(s) == 3 and isinstance(s[0], nn.Conv2d)
                and isinstance(s[1], nn.ReLU) and isinstance(s[2], nn.Conv2d)):
            raise ValueError("LeanAllInOneBlock: the subnet must be Conv2d-ReLU-Conv2d (FastFlow's)")
        self.register_buffer("perm_index", torch.empty(0, dtype=torch.long), persistent=False)
        self.register_buffer("inverse_index", torch.empty(0, dtype=torch.long), persistent=False)
        self._index_from_matrix()
        self.register_load_state_dict_post_hook(lambda module, _: module._index_from_matrix())

    @torch.no_grad()
    def _index_from_matrix(self) -> None:
        w = self.w_perm.detach().reshape(self.in_channels, self.in_channels).cpu()
        if not (torch.all((w == 0) | (w == 1)) and torch.all(w.sum(0) == 1) and torch.all(w.sum(1) == 1)):
            raise ValueError("LeanAllInOneBlock: w_perm is not a hard permutation (permute_soft must be False)")
        # conv2d(x, w)[:, i] = sum_j w[i, j] x[:, j] = x[:, index[i]]
        index = w.argmax(dim=1).to(self.w_perm.device)
        self.perm_index = index
        self.inverse_index = torch.argsort(index)

    def _permute(self, x: torch.Tensor, rev: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.global_scale_activation(self.global_scale)
        log_jac = torch.sum(torch.log(scale))
        if rev:
            return (x.index_select(1, self.inverse_index) - self.global_offset) / scale, log_jac
        # (x * s + t)[:, index] == x[:, index] * s[index] + t[index]: one fused pass.
        index = self.perm_index
        return torch.addcmul(self.global_offset.index_select(1, index), x.index_select(1, index), scale.index_select(1, index)), log_jac

    def forward(self, x, c=[], rev=False, jac=True):  # noqa: B006 - FrEIA's signature
        """With gradients (training) and in reverse: FrEIA's arithmetic, permuted by the
        gather. Without gradients (scoring): the same function in fewer, cheaper passes
        (the same arithmetic under autograd measured no faster in training, where the
        subnet's convolutions dominate: docs/benchmarks.md)."""
        if rev or self.conditional or torch.is_grad_enabled():
            return super().forward(x, c, rev=rev, jac=jac)
        x = x[0]
        c1, ch = self.splits
        x1, x2 = x[:, :c1], x[:, c1:]
        conv1, _, conv2 = self.subnet
        clamp = self.clamp
        scale = self.global_scale_activation(self.global_scale)[0, :, 0, 0]
        offset = self.global_offset[0, :, 0, 0]
        s2 = scale[c1:]
        # Folded into conv2's weights and bias (a few thousand numbers) instead of passes
        # over its output: FrEIA's 0.1, the 2 of tanh(y) = 2 sigmoid(2y) - 1 on the scale
        # half, and on the shift half the global affine of the channels it shifts.
        w, b = conv2.weight, conv2.bias
        w = torch.cat((w[:ch] * 0.2, w[ch:] * (0.1 * s2)[:, None, None, None]))
        b = torch.cat((b[:ch] * 0.2, b[ch:] * (0.1 * s2) + offset[c1:]))
        a = F.conv2d(torch.relu_(conv1(x1)), w, b, padding=conv2.padding)
        sig = torch.sigmoid_(a[:, :ch])  # clamp * tanh(0.1 subnet) = clamp * (2 sig - 1)
        # x2 * exp(sub_jac) * s2 = x2 * exp2(sub_jac * log2(e) + log2(s2)): on the CPU,
        # torch's tanh is 7.6x and exp 2.4x slower than sigmoid and exp2.
        log2_s2 = torch.log2(s2)[:, None, None]
        if jac:
            sub_jac = sig.mul_(2.0 * clamp).sub_(clamp)
            log_jac = sub_jac.sum(dim=self.sum_dims) + x[0, :1].numel() * torch.sum(torch.log(scale))
            exponent = sub_jac.mul_(LOG2E).add_(log2_s2)
        else:  # SequenceINN adds the blocks' log-dets: zeros keep that working
            log_jac = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            exponent = sig.mul_(2.0 * clamp * LOG2E).add_(log2_s2 - clamp * LOG2E)
        y2 = torch.addcmul(a[:, ch:], x2, exponent.exp2_())
        y1 = torch.addcmul(offset[:c1, None, None], x1, scale[:c1, None, None])
        # out[:, i] = (y1, y2)[:, index[i]]: each half copied once to its permuted place
        out = torch.empty_like(x)
        out.index_copy_(1, self.inverse_index[:c1], y1)
        out.index_copy_(1, self.inverse_index[c1:], y2)
        return (out,), log_jac
