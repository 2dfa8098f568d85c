"""Float64 reference for the clamped GLU of GPT-OSS's and DeepSeek-V4's MoE experts
(kernels/ops/clamped_glu.cuh), with the per-element error bounds of the GPU tests
(tests/gpu/test_clamped_glu.py).

x [..., 2I] holds gate and up: the halves (``pairs=False``, gate first) or the even / odd columns
(``pairs=True``).

forward:  g = min(gate, limit), u = clamp(up, -limit, limit), s = sigmoid(alpha g),
          y = g s (u + up_offset)                           (NaN stays NaN, as torch's clamp)
backward: dgate = dy (u + up_offset) s (1 + alpha g (1 - s))  where gate < limit, else 0
          dup   = dy g s                                      where -limit < up < limit, else 0
          (autograd's clamp gradients: strictly inside the bounds; NaN inputs give 0)

Error of the kernels: every term is formed in fp32 from inputs that are exact in fp32, then the
result is rounded once to the output dtype. Besides that final rounding (u |ref|, half a
subnormal spacing below the normal range) the fp32 evaluation costs a few fp32 ulps of each term:
the exp (accurate expf, or the SFU's ex2 for 16-bit outputs, ~2 ulp) and up to 5 roundings of
products and sums. Its absolute size is bounded by ``C * 2^-24 * scale`` with scale the sum of the
terms' magnitudes (below), and C = 64 covers the fast exp's ~2 ulp and the roundings with room; the
backward's ``1 + alpha g (1 - s)`` can cancel, so its bound is absolute in that scale, not relative
to the (possibly tiny) result.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ligerd.testing.reference.precision import TINY, U

# fp32 evaluation slack, in units of 2^-24 of the terms' magnitude (module docstring).
C_EVAL = 64


def split(x: torch.Tensor, pairs: bool):
    """(gate, up) views of x [..., 2I]."""
    if pairs:
        return x[..., 0::2], x[..., 1::2]
    n = x.shape[-1] // 2
    return x[..., :n], x[..., n:]


def merge(dgate: torch.Tensor, dup: torch.Tensor, pairs: bool) -> torch.Tensor:
    """The [..., 2I] tensor in x's layout from its two halves."""
    if pairs:
        return torch.stack((dgate, dup), dim=-1).flatten(-2)
    return torch.cat((dgate, dup), dim=-1)


class Parts(NamedTuple):
    xg: torch.Tensor   # the unclamped gate and up, float64
    xu: torch.Tensor
    g: torch.Tensor    # clamped
    u: torch.Tensor
    s: torch.Tensor    # sigmoid(alpha g)


def _parts(x, alpha, limit, pairs) -> Parts:
    xg, xu = (t.double() for t in split(x, pairs))
    lim = torch.tensor(float(limit), dtype=torch.float64)
    g = torch.where(xg > lim, lim, xg)                           # NaN stays NaN
    u = torch.where(xu > lim, lim, torch.where(xu < -lim, -lim, xu))
    return Parts(xg, xu, g, u, torch.sigmoid(float(alpha) * g))


def forward(x, alpha, limit, up_offset, pairs) -> torch.Tensor:
    """y [..., I] in float64."""
    p = _parts(x, alpha, limit, pairs)
    return (p.g * p.s) * (p.u + float(up_offset))


def backward(dy, x, alpha, limit, up_offset, pairs) -> torch.Tensor:
    """dx [..., 2I] in float64, x's layout; exactly 0 where a clamp was active (even for an inf or
    NaN dy), as autograd's clamp backward."""
    p = _parts(x, alpha, limit, pairs)
    d = dy.double()
    lim = float(limit)
    zero = torch.zeros((), dtype=torch.float64)
    dgate = torch.where(p.xg < lim, d * (p.u + up_offset) * p.s * (1 + alpha * p.g * (1 - p.s)), zero)
    dup = torch.where((p.xu < lim) & (p.xu > -lim), d * (p.g * p.s), zero)
    return merge(dgate, dup, pairs)


def forward_scale(x, alpha, limit, up_offset, pairs) -> torch.Tensor:
    """The magnitude the forward's fp32 evaluation errors are relative to: |g s| (|u| + |off|)."""
    p = _parts(x, alpha, limit, pairs)
    return (p.g * p.s).abs() * (p.u.abs() + abs(up_offset))


def backward_scale(dy, x, alpha, limit, up_offset, pairs) -> torch.Tensor:
    """Per element of dx: |dy| (|u| + |off|) s (1 + |alpha g| (1 - s)) for the gate, |dy g s| for
    the up (NaN-free where the clamp zeroes the gradient)."""
    p = _parts(x, alpha, limit, pairs)
    d = dy.double().abs()
    sg = d * (p.u.abs() + abs(up_offset)) * p.s * (1 + (alpha * p.g).abs() * (1 - p.s))
    su = d * (p.g * p.s).abs()
    return merge(torch.nan_to_num(sg, nan=0.0), torch.nan_to_num(su, nan=0.0), pairs)


def tol(dtype, ref64: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Per-element bound: one rounding of ref64 to dtype plus the fp32 evaluation slack."""
    return U[dtype] * ref64.abs() + TINY[dtype] / 2 + C_EVAL * 2.0 ** -24 * scale
