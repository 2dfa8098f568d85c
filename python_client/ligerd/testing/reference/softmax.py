"""Float64 reference for softmax over the last dimension (kernels/ops/softmax.cuh, Liger-Kernel's
LigerSoftmax), with the per-element error bounds of the GPU tests (tests/gpu/test_softmax.py).

forward:  y = exp(x - m) / sum(exp(x - m)), m = max(x) per row. The kernels compute it in fp32 from
          x converted to fp32 and round y once to x's dtype. -inf entries give 0; a row of -inf
          only (or holding +inf or NaN) gives NaN, as torch.softmax.
backward: dx = y * (dy - sum(dy * y)) per row, from the forward's (rounded) y; fp32 in the
          kernels, rounded once.

The fp32 computation's error, per element (u = 2^-24, the fp32 unit roundoff):
- forward: x - m is rounded (u * |x - m| relative, which exp turns into the same relative error of
  y: the ``d`` below); expf is good to 2 ulps; the fp32 sum of the exps has a relative error of a
  few hundred u at most for the widest rows (all its terms are positive, so there is no
  cancellation: its error is relative to y itself), written as 1e-5 as for the norms. Outputs in
  fp32's subnormal range (|x - m| > 87) are off by up to a few subnormal spacings.
- backward: the dot product is summed in fp32 (1e-5 of sum |dy * y|, its "scale", as the norms'
  sums), then dx = y * (dy - dot): |y| times that, plus the two roundings of the last steps.
A result rounded to bf16/fp16 adds the unit roundoff of that dtype times |ref| (one rounding of a
value within the fp32 bound of ref) and, below its smallest normal, its subnormal spacing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ligerd.testing.reference.precision import TINY, U

U32 = U[torch.float32]
# The fp32 sums' bound relative to their scale (the norms' tests use the same, see rms_norm.py).
SUM_REL = 1e-5


@dataclass
class FwdRef:
    y: torch.Tensor  # float64, rows x n
    d: torch.Tensor  # float64, rows x n: |x - max|, 0 where x is -inf (y is exactly 0 there)


@dataclass
class BwdRef:
    dx: torch.Tensor     # float64, rows x n
    dx_scale: torch.Tensor  # float64, rows x n: |y| * sum over the row of |dy * y|


def forward(x: torch.Tensor) -> FwdRef:
    """x: (rows, n) or any shape, softmax over the last dim; float64 results on x's device."""
    x64 = x.double()
    y = torch.softmax(x64, dim=-1)
    d = (x64 - x64.amax(dim=-1, keepdim=True)).abs()
    d = torch.where(torch.isfinite(d), d, torch.zeros_like(d))
    return FwdRef(y=y, d=d)


def backward(dy: torch.Tensor, y: torch.Tensor) -> BwdRef:
    """dy, y: the same shape; y is the forward's output as the backward reads it (rounded)."""
    dy64, y64 = dy.double(), y.double()
    terms = dy64 * y64
    dot = terms.sum(dim=-1, keepdim=True)
    dx = y64 * (dy64 - dot)
    return BwdRef(dx=dx, dx_scale=y64.abs() * terms.abs().sum(dim=-1, keepdim=True))


# ------------------------------------------------------------------------------------------
# Tolerances of the GPU tests, as bounds per element (the module docstring derives them).

def _fp32_fwd(r: FwdRef) -> torch.Tensor:
    return (SUM_REL + 2 * U32 * r.d) * r.y.abs() + 4 * TINY[torch.float32]


def fwd_tol(dtype, r: FwdRef) -> torch.Tensor:
    f32 = _fp32_fwd(r)
    if dtype == torch.float32:
        return f32
    return U[dtype] * r.y.abs() + (1 + U[dtype]) * f32 + TINY[dtype]


def _fp32_bwd(r: BwdRef) -> torch.Tensor:
    return 4 * U32 * r.dx.abs() + SUM_REL * r.dx_scale + 4 * TINY[torch.float32]


def dx_tol(dtype, r: BwdRef) -> torch.Tensor:
    f32 = _fp32_bwd(r)
    if dtype == torch.float32:
        return f32
    return U[dtype] * r.dx.abs() + (1 + U[dtype]) * f32 + TINY[dtype]
