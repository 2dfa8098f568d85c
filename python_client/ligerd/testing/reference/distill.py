"""Float64 references of the distillation losses (kernels/ops/distill.cuh; Liger-Kernel 0.8.5's
LigerKLDIVLoss, LigerJSD, LigerTVDLoss), with per-element bounds of the kernels' fp32 error for the
GPU tests (tests/gpu/test_kl_div.py, test_jsd.py, test_tvd.py).

Semantics (Liger's, ops/kl_div.py, ops/jsd.py, ops/tvd.py):
- KL, input x in log space:  t * (log(max(t, eps)) - x), or exp(t) * (t - x) with log_target;
  the gradient of x is -t (or -exp(t)) times the upstream gradient and the reduction's factor
  (batchmean 1/rows, mean 1/(rows*n), sum and none 1). No gradient for the target.
- JSD of student X = log q and teacher Y = log p, Q = exp(X), P = exp(Y), M = beta P + (1-beta) Q:
  beta == 0: P (Y - X), dX = -P; beta == 1: Q (X - Y), dX = Q (X - Y) + Q; otherwise
  beta P (Y - log M) + (1 - beta) Q (X - log M), dX = (1 - beta) Q (X - log M). Loss and dX
  divided by the count of non-ignored rows (all rows without labels); ignored rows: 0.
- TVD: 0.5 |p - q|, gradient of p 0.5 sign(p - q) (0 where equal), both times the reduction's
  factor (batchmean 1/count, mean 1/(count*n), sum and none 1); ignored rows: 0.

Error bounds of the kernels' fp32 arithmetic, per element (u = 2^-24):
- Each formula is a handful of roundings (<= 6) of values bounded by its "magnitude" A below,
  plus expf/logf's 2 ulps each; 16 u A covers them with room. Results below fp32's smallest
  normal (an exp of a log-probability under -87) add an absolute term (_subnormal). Exponentials of an argument formed
  in fp32 (X - m, fp32 inputs) carry u |argument| relative error more: the (1 + |X - Y|) factor.
  - KL: A = |t| (|log max(t, eps)| + |x| + 1), or e^t (|t| + |x| + 1) with log_target.
  - JSD: A = beta P (|Y| + |log M| + 1) + (1 - beta) Q (|X| + |log M| + 1) for the loss (the
    special cases: P (|X| + |Y| + 1) and Q (|X| + |Y| + 1)); the same without the P term for dX.
  - TVD: A = 0.5 |p - q| (one subtraction, exact halving).
- Row sums: fp32, each thread sequentially then a fixed tree. SUM_REL (1e-5) of the sum of the
  terms' absolute values, as the norms' and softmax's tests: the rounding errors of a chain of a few
  hundred additions (a 262144-wide bf16 row: 512 per thread at 512 threads, then 9 tree levels)
  add up like a random walk, ~sqrt(520) u = 1.4e-6; the worst case (520 u = 3e-5) needs every one
  of them to round the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ligerd.testing.reference.precision import TINY, U

U32 = U[torch.float32]
SUM_REL = 1e-5
ELEM_ROUNDINGS = 16  # the "16 u A" above

REDUCTIONS = {"none": 0, "sum": 1, "mean": 2, "batchmean": 3}
T32 = TINY[torch.float32]


def _subnormal(*logs):
    """Absolute bound for results below fp32's smallest normal: an exp landing there (a log-
    probability under -87) is off by up to a subnormal spacing, absolutely, and the log terms it
    multiplies scale that: 8 spacings times 1 + the sum of those terms' magnitudes."""
    return 8 * T32 * (1 + sum(v.abs() for v in logs))


@dataclass
class Elems:
    """Per-element float64 results and bounds of the kernels' fp32 error (rows x n)."""
    loss: torch.Tensor
    loss_err: torch.Tensor      # bound of |fp32 loss element - loss|
    loss_mag: torch.Tensor      # A, the magnitude of the element's terms (its bound's base)
    grad: Optional[torch.Tensor] = None
    grad_err: Optional[torch.Tensor] = None


# ------------------------------------------------------------------------------------------
# KL divergence

def kl_div(x: torch.Tensor, t: torch.Tensor, log_target: bool, eps: float) -> Elems:
    """Element losses of KL(t || exp(x)); x, t any shape (the same)."""
    xd, td = x.double(), t.double()
    if log_target:
        e = torch.exp(td)
        loss = e * (td - xd)
        mag = e * (td.abs() + xd.abs() + 1)
        sub = _subnormal(td, xd)
    else:
        lt = torch.log(torch.clamp(td, min=float(torch.tensor(eps, dtype=torch.float32))))
        loss = td * (lt - xd)
        mag = td.abs() * (lt.abs() + xd.abs() + 1)
        sub = _subnormal(lt, xd)
    return Elems(loss=loss, loss_err=ELEM_ROUNDINGS * U32 * mag + sub, loss_mag=mag)


def kl_div_grad(t: torch.Tensor, g: torch.Tensor, log_target: bool, scale: float) -> Elems:
    """dX = -(t or exp(t)) * g * scale; g one element or t's shape. Bounds, relative: two or three
    roundings (the factor, the products) and expf's two ulps (4 u) with log_target, doubled."""
    td = t.double()
    d = torch.exp(td) if log_target else td
    grad = -d * g.double() * scale
    err = (12 if log_target else 4) * U32 * grad.abs() + 4 * T32 * (1 + g.double().abs() * abs(scale))
    return Elems(loss=grad, loss_err=err, loss_mag=grad.abs(), grad=grad, grad_err=err)


def kl_div_rows(x, t, log_target, eps):
    """(row sums, bound of the kernel's fp32 row sums) of the element losses (rows = leading dims)."""
    e = kl_div(x, t, log_target, eps)
    return e.loss.sum(-1), e.loss_err.sum(-1) + SUM_REL * e.loss.abs().sum(-1)


# ------------------------------------------------------------------------------------------
# JSD

def jsd(x: torch.Tensor, y: torch.Tensor, beta: float) -> Elems:
    """Element loss and dX (before the division by the count) of Liger's generalised JSD."""
    X, Y = x.double(), y.double()
    if beta == 0.0:
        P = torch.exp(Y)
        loss = P * (Y - X)
        grad = -P
        lmag = P * (X.abs() + Y.abs() + 1)
        gmag = P
    elif beta == 1.0:
        Q = torch.exp(X)
        loss = Q * (X - Y)
        grad = loss + Q
        lmag = Q * (X.abs() + Y.abs() + 1)
        gmag = lmag
    else:
        P, Q = torch.exp(Y), torch.exp(X)
        m = torch.maximum(X, Y)
        log_m = m + torch.log(beta * torch.exp(Y - m) + (1 - beta) * torch.exp(X - m))
        grad = (1 - beta) * Q * (X - log_m)
        loss = beta * P * (Y - log_m) + grad
        gmag = (1 - beta) * Q * (X.abs() + log_m.abs() + 1)
        lmag = beta * P * (Y.abs() + log_m.abs() + 1) + gmag
    arg = 1 + (X - Y).abs()
    arg = torch.where(torch.isfinite(arg), arg, torch.ones_like(arg))
    sub = _subnormal(X, Y) if beta in (0.0, 1.0) else _subnormal(X, Y, log_m)
    return Elems(loss=loss, loss_err=ELEM_ROUNDINGS * U32 * arg * lmag + sub, loss_mag=lmag,
                 grad=grad, grad_err=ELEM_ROUNDINGS * U32 * arg * gmag + sub)


def valid_count(rows: int, labels: Optional[torch.Tensor], ignore_index: int) -> int:
    return rows if labels is None else int((labels != ignore_index).sum())


def jsd_rows(x, y, beta, labels=None, ignore_index=-100):
    """(row losses, their bound, dX, its bound), all float64 and already divided by the count,
    as jsd_fwd writes them (ignored rows 0)."""
    e = jsd(x, y, beta)
    n = valid_count(x.shape[0], labels, ignore_index)
    scale = 1.0 / n if n > 0 else 0.0
    keep = torch.ones(x.shape[0], dtype=torch.bool, device=x.device) if labels is None else labels != ignore_index
    k = keep[:, None].double()
    rows = (e.loss * k).sum(-1) * scale
    rows_err = ((e.loss_err * k).sum(-1) + SUM_REL * (e.loss.abs() * k).sum(-1)) * scale * (1 + 2 * U32)
    grad = e.grad * k * scale
    grad_err = (e.grad_err * k * scale) + 2 * U32 * grad.abs()
    return rows, rows_err, grad, grad_err


# ------------------------------------------------------------------------------------------
# TVD

def tvd_scale(reduction: str, count: int, n: int) -> float:
    if reduction == "batchmean":
        return 1.0 / count if count > 0 else 0.0
    if reduction == "mean":
        return 1.0 / (count * n) if count > 0 else 0.0
    return 1.0


def tvd(p, q, reduction="batchmean", labels=None, ignore_index=-100):
    """(loss as tvd_fwd writes it: [rows, n] for "none" else [rows] scaled, its bound, the
    gradient of p, float64). Ignored rows: zeros."""
    P, Q = p.double(), q.double()
    rows, n = P.shape
    count = valid_count(rows, labels, ignore_index)
    scale = tvd_scale(reduction, count, n)
    keep = torch.ones(rows, dtype=torch.bool, device=p.device) if labels is None else labels != ignore_index
    k = keep[:, None].double()
    elem = 0.5 * (P - Q).abs() * k
    elem_err = 2 * U32 * elem
    grad = torch.where(P == Q, torch.zeros_like(P), torch.where(P > Q, 0.5 * scale, -0.5 * scale)) * k
    # float32(scale) once: the kernel's factor is the fp32 rounding of 0.5 * scale
    if reduction == "none":
        return elem, elem_err, grad
    r = elem.sum(-1) * scale
    r_err = (elem_err.sum(-1) + SUM_REL * elem.sum(-1)) * scale + 2 * U32 * r.abs()
    return r, r_err, grad
