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
the exp (accurate expf, or the SFU's ex2 for 16-bit outputs, ~2 ulp), the reciprocal and up to 5
roundings of products and sums, and one thing that grows: z = alpha g is rounded (alpha itself is
rounded to fp32 too), an absolute error of ~2^-23 |z| in the exponent, so s = sigmoid(z) carries a
relative error up to ~2^-23 |z| (1 - s) (z ~ -80 is 2^-16.7), as torch's own fp32 does. So the
bound is ``C * 2^-24 * scale`` with scale the terms' magnitude times (1 + |z|) in the forward and
the up's gradient, (1 + |z|)^2 in the gate's gradient (whose 1 + z (1 - s) factor carries z's error
again), and C = 64 covers those and the roundings with room. The backward's ``1 + z (1 - s)`` can
cancel, so its bound is absolute in that scale, not relative to the (possibly tiny) result.
Below fp32's normal range (s < 2^-126, i.e. z < -87.3: e^-z overflows for z < -88.7, and the
reciprocal is a subnormal before that) s is 0 or a subnormal, off by up to 2^-126: the slack adds
2^-125 times the factors s is multiplied by (bf16 has fp32's exponent range, so it sees this too).
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


UNDERFLOW = 2.0 ** -125  # bound of s's error where s is below fp32's normal range


def forward_slack(x, alpha, limit, up_offset, pairs) -> torch.Tensor:
    """The forward's fp32 evaluation slack (module docstring): C 2^-24 |g s| (|u| + |off|)
    (1 + |alpha g|), plus 2^-125 |g| (|u| + |off|) where s underflows."""
    p = _parts(x, alpha, limit, pairs)
    up = p.u.abs() + abs(up_offset)
    tiny_s = torch.where(p.s < 2 * UNDERFLOW, UNDERFLOW, 0.0)
    slack = C_EVAL * 2.0 ** -24 * (p.g * p.s).abs() * up * (1 + (alpha * p.g).abs()) + tiny_s * p.g.abs() * up
    return torch.nan_to_num(slack, nan=0.0)


def backward_slack(dy, x, alpha, limit, up_offset, pairs) -> torch.Tensor:
    """Per element of dx: C 2^-24 |dy| (|u| + |off|) s (1 + |alpha g|)^2 for the gate and
    C 2^-24 |dy g s| (1 + |alpha g|) for the up, plus 2^-125 times the same without s where s
    underflows (NaN-free where the clamp zeroes the gradient)."""
    p = _parts(x, alpha, limit, pairs)
    d = dy.double().abs()
    up = p.u.abs() + abs(up_offset)
    z1 = 1 + (alpha * p.g).abs()
    tiny_s = torch.where(p.s < 2 * UNDERFLOW, UNDERFLOW, 0.0)
    c = C_EVAL * 2.0 ** -24
    sg = d * up * z1 * z1 * (c * p.s + tiny_s)
    su = d * p.g.abs() * z1 * (c * p.s + tiny_s)
    return merge(torch.nan_to_num(sg, nan=0.0), torch.nan_to_num(su, nan=0.0), pairs)


def tol(dtype, ref64: torch.Tensor, slack: torch.Tensor) -> torch.Tensor:
    """Per-element bound: one rounding of ref64 to dtype plus the fp32 evaluation slack
    (forward_slack / backward_slack)."""
    return U[dtype] * ref64.abs() + TINY[dtype] / 2 + slack
