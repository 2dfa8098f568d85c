"""Float64 reference for RMSNorm with the rounding points of ligerd's kernels (kernels/ops/rms_norm.cuh,
which follow Liger-Kernel's semantics in shared/reference/liger-api.md 1b), plus per-element error
scales. T() rounds to X's dtype, TW() to W's dtype; W may be X's dtype or float32.

forward, rstd = 1 / sqrt(mean(x^2) + eps):
- llama: y = T(x * rstd) * (offset + w)       only the normalised x is rounded before the multiply
- gemma: y = x * rstd * (offset + w)          all in fp32, one rounding at the end
- none:  rstd = T(rsqrt(T(T(ms) + T(eps)))), y = T(x * rstd) * TW(T(offset) + w)   (in X's dtype)
Without a weight, y = the normalised x (the offset belongs to the weight).
(The final rounding of y to X's dtype is the one the tolerance's |ref| term covers.)

backward (all modes in fp32, as Liger upcasts there), with m = dY * (offset + w) (dY without a
weight) and N the hidden size:
- dX = rstd * m - rstd^3 / N * sum(m * x) * x
- dW = sum over rows of dY * xn, xn = T(x * rstd) for llama, x * rstd otherwise (none: with the
  rounded rstd saved by the forward).

Where this differs from Liger's Triton code it is in where fp32 vs the input dtype is used for an
intermediate, which moves results by at most about one unit of the input dtype's precision times
the scale below; the tolerances allow for that, so a Liger-exact kernel passes too.

Each result comes with a "scale": the sum of the magnitudes of the terms that made it. Rounding an
intermediate, or summing in fp32 in another order, moves the result by a multiple of the unit
roundoff times that scale (not times |result|, which can be ~0 after cancellation). Tolerances in
test_rms_norm.py are written as  |got - ref| <= k_out * u * |ref| + k_mid * u * scale + tiny.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ligerd.testing.reference.precision import TINY, U

LLAMA, GEMMA, NONE = 0, 1, 2
MODE_IDS = {"llama": LLAMA, "gemma": GEMMA, "none": NONE}


def _r(t64: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Round a float64 tensor to ``dtype`` (round-to-nearest-even, as the kernels' casts do) and back."""
    return t64.to(dtype).to(torch.float64)


@dataclass
class FwdRef:
    y: torch.Tensor        # float64, rows x N
    y_scale: torch.Tensor  # float64, rows x N
    rstd: torch.Tensor     # float64, rows


@dataclass
class BwdRef:
    dx: torch.Tensor
    dx_scale: torch.Tensor
    dw: Optional[torch.Tensor]
    dw_scale: Optional[torch.Tensor]


def _weight_plus_offset(w: Optional[torch.Tensor], offset: float, mode: int, xdtype) -> Optional[torch.Tensor]:
    if w is None:
        return None
    if mode == NONE:
        off = torch.tensor(offset, dtype=torch.float64).to(xdtype).double()
        return _r(w.double() + off, w.dtype)
    return w.double() + offset


def _rstd(x64: torch.Tensor, eps: float, mode: int, dt) -> torch.Tensor:
    ms = (x64 * x64).mean(dim=-1, keepdim=True)
    if mode == NONE:
        eps_t = torch.tensor(eps, dtype=torch.float64).to(dt).double()
        return _r(torch.rsqrt(_r(_r(ms, dt) + eps_t, dt)), dt)
    return torch.rsqrt(ms + eps)


def forward(x: torch.Tensor, w: Optional[torch.Tensor], eps: float, offset: float, mode: int) -> FwdRef:
    """x: (rows, N) in any float dtype; returns float64 results on x's device."""
    dt = x.dtype
    x64 = x.double()
    rstd = _rstd(x64, eps, mode, dt)
    xhat = x64 * rstd
    if mode in (LLAMA, NONE):
        xhat = _r(xhat, dt)
    wo = _weight_plus_offset(w, offset, mode, dt)
    y = xhat if wo is None else xhat * wo
    return FwdRef(y=y, y_scale=y.abs(), rstd=rstd.squeeze(-1))


def backward(dy: torch.Tensor, x: torch.Tensor, w: Optional[torch.Tensor], eps: float,
             offset: float, mode: int, rstd: Optional[torch.Tensor] = None) -> BwdRef:
    """``rstd`` (rows,) if given is used as saved by a forward, else recomputed from x and eps."""
    dt = x.dtype
    n = x.shape[-1]
    x64 = x.double()
    dy64 = dy.double()
    if rstd is None:
        rstd = _rstd(x64, eps, mode, dt)
    else:
        rstd = rstd.double().reshape(-1, 1)
    m = dy64 if w is None else dy64 * (w.double() + offset)
    mx = m * x64
    s = mx.sum(dim=-1, keepdim=True)
    dx = rstd * m - (rstd ** 3) / n * s * x64
    dx_scale = rstd * m.abs() + (rstd ** 3) / n * mx.abs().sum(dim=-1, keepdim=True) * x64.abs()
    dw = dw_scale = None
    if w is not None:
        xhat = x64 * rstd
        if mode == LLAMA:
            xhat = _r(xhat, dt)
        terms = dy64 * xhat
        dw = terms.sum(dim=0)
        dw_scale = terms.abs().sum(dim=0)
    return BwdRef(dx=dx, dx_scale=dx_scale, dw=dw, dw_scale=dw_scale)


# ------------------------------------------------------------------------------------------
# Tolerances of the GPU tests (tests/gpu/test_rms_norm.py explains them), as bounds per element

def fwd_tol(dtype, mode, r: ref.FwdRef, wmax: float = 1.0):
    """wmax: the largest |offset + w| (an intermediate rounded in the subnormal range is
    multiplied by it)."""
    if dtype == torch.float32:
        return 1e-5 * r.y.abs() + 1e-5 * r.y_scale + 1e-30
    u = U[dtype]
    k_mid = {"llama": 2, "gemma": 0, "none": 6}[mode]
    atol = (1 + k_mid / 2) * TINY[dtype] * max(1.0, wmax)
    return 2 * u * r.y.abs() + k_mid * u * r.y_scale + atol


def dx_tol(dtype, mode, r: ref.BwdRef):
    if dtype == torch.float32:
        return 1e-5 * r.dx.abs() + 1e-5 * r.dx_scale + 1e-30
    u = U[dtype]
    k_mid = 2 if mode == "none" else 0
    return 2 * u * r.dx.abs() + (1e-5 + k_mid * u) * r.dx_scale + TINY[dtype]


def dw_tol(xdtype, wdtype, mode, r: ref.BwdRef):
    uw = U[wdtype]
    # llama rounds x*rstd to X's dtype; none uses a rounded rstd: one ulp of X's dtype each
    k_mid = 2 * U[xdtype] if (mode in ("llama", "none") and xdtype != torch.float32) else 0.0
    out = 1e-5 if wdtype == torch.float32 else 2 * uw
    return out * r.dw.abs() + (2e-5 + k_mid) * r.dw_scale + TINY[wdtype]


def wmax(w, offset) -> float:
    return 1.0 if w is None else float((w.double() + offset).abs().max())
