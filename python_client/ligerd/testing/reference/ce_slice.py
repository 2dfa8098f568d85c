"""Float64 reference for the vocabulary-sliced cross-entropy steps (kernels/ops/ce_slice.cuh), the
two kernels of the fused linear cross-entropy's sliced path (ligerd/ops/fused_linear_cross_entropy.py):
the logits of a block of tokens are computed one slice of classes at a time and never exist whole.

ce_slice_stats (pass 1, once per slice, slices in increasing v0): X [rows, n] holds the logits of
classes [v0, v0 + n). With z = X, or c * tanh(X / c) with softcap c > 0, it updates per row

    stats[:, 0] = m   running max of z                      (first: the slice's max)
    stats[:, 1] = s   sum of exp(z - m) over the classes seen (rescaled by exp(m_old - m_new))
    stats[:, 2] = sz  sum of w_j z_j over the classes seen (w = class weights, 1 without)
    stats[:, 3] = zy  z of the row's target where it lies in this slice; else unchanged (first: 0)
    idx             first argmax over the classes seen (a later slice wins only when its max is
                    strictly larger), optional

ce_slice_grad (pass 2): with coef [rows, 4] = (lse, A, B, C) per row (the caller's finalize, from
the stats, the reduction and the per-row factors), writes over X (dX may alias X)

    dX_j = (A exp(z_j - lse) + B w_{v0+j} + C [v0 + j == target]) * (1 - tanh(X_j / c)^2 with softcap)

and 0 on rows whose target is ignore_index.

Error: the kernels work in fp32 (exp via ex2.approx, relative error < 2^-22), the sum s
accumulates in fp32 across slices (a few hundred u of its value: all terms positive); the gradient
is rounded once to X's dtype. The tests (tests/gpu/test_ce_slice.py) bound each result by the
fp32 unit roundoff times its scale as the cross-entropy tests do.
"""

from __future__ import annotations

from typing import Optional

import torch


def softcapped(x: torch.Tensor, softcap: float) -> torch.Tensor:
    x = x.double()
    return softcap * torch.tanh(x / softcap) if softcap > 0 else x


def stats_update(x: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor],
                 stats: torch.Tensor, idx: Optional[torch.Tensor], v0: int, first: bool,
                 softcap: float) -> tuple:
    """The updated (stats [rows, 4] float64, idx [rows] int64 or None) after the slice x (n >= 1)."""
    z = softcapped(x, softcap)
    rows, n = z.shape
    w = weight.double()[v0:v0 + n] if weight is not None else torch.ones(n, dtype=torch.float64, device=z.device)
    sm = z.amax(dim=1)
    cols = torch.arange(n, device=z.device)
    si = torch.where(z == sm[:, None], cols[None, :], n).amin(dim=1)  # the first argmax
    ss = torch.exp(z - sm[:, None]).sum(dim=1)
    ssz = (z * w[None, :]).sum(dim=1)
    local = target - v0
    here = (local >= 0) & (local < n)
    zy = z.gather(1, local.clamp(0, n - 1)[:, None])[:, 0]
    if first:
        m, s, sz, old_zy = sm, ss, ssz, torch.zeros_like(sm)
        new_idx = si + v0 if idx is not None else None
    else:
        pm, ps, psz, old_zy = (stats[:, i].double() for i in range(4))
        m = torch.maximum(pm, sm)
        s = ps * torch.exp(pm - m) + ss * torch.exp(sm - m)
        sz = psz + ssz
        new_idx = torch.where(sm > pm, si + v0, idx) if idx is not None else None
    return torch.stack([m, s, sz, torch.where(here, zy, old_zy)], dim=1), new_idx


def grad(x: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor], coef: torch.Tensor,
         v0: int, softcap: float, ignore_index: int) -> torch.Tensor:
    """dX of the slice x (float64, x's shape)."""
    z = softcapped(x, softcap)
    n = z.shape[1]
    lse, A, B, C = (coef[:, i].double()[:, None] for i in range(4))
    w = weight.double()[v0:v0 + n] if weight is not None else torch.ones(n, dtype=torch.float64, device=z.device)
    cols = torch.arange(v0, v0 + n, device=z.device)
    g = A * torch.exp(z - lse) + B * w[None, :] + C * (cols[None, :] == target[:, None]).double()
    if softcap > 0:
        t = torch.tanh(x.double() / softcap)
        g = g * (1 - t * t)
    return torch.where((target == ignore_index)[:, None], torch.zeros_like(g), g)


__all__ = ["grad", "softcapped", "stats_update"]
