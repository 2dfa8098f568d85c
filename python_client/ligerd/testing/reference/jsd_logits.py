"""Float64 reference of jsd_logits_fwd (kernels/ops/distill_jsd_logits.cuh): the generalised JSD
distillation loss of one block of raw logits and its gradient w.r.t. the student's logits.

Per row, student s (ns columns, padded with zero logits to the teacher's nt), teacher t:
  X = log_softmax(s * s_scale padded), Y = log_softmax(t * t_scale)
  loss = sum_j jsd(X_j, Y_j)        (reference/distill.py's jsd: Liger's generalised JSD, beta)
  g = d loss / d X,  q = exp(X)
  d_student = scale * (soft_coef * (g - q sum(g)) + hard_coef * (q - onehot(label)))[:ns]
  hard_loss = logsumexp(s) - s[label]            (with the hard loss: s_scale 1, ns == nt)
Rows whose label is ignore_index: loss 0, hard_loss 0, d_student 0. A hard-loss label outside
[0, ns) gives a NaN hard loss (and no one-hot term), as the kernel.

Error bounds for the GPU test (tests/gpu/test_distill_fused.py), per row: the kernel's fp32
log-softmaxes are off by ~u (|x| + |lse| + log n) absolutely (a few roundings of values that
size), which moves every element's JSD terms by that times their magnitude; the row sums add
distill.SUM_REL of the sum of magnitudes. The bounds returned below are those terms with a
factor of 16 of room (distill.ELEM_ROUNDINGS), plus the fp32 and output-dtype roundings of
d_student.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ligerd.testing.reference import distill as distill_ref

U32 = distill_ref.U32


@dataclass
class Result:
    loss: torch.Tensor                 # float64 [rows]
    loss_err: torch.Tensor             # bound of |fp32 kernel row loss - loss|
    hard_loss: Optional[torch.Tensor]  # float64 [rows] or None
    grad: torch.Tensor                 # float64 [rows, ns]
    grad_err: torch.Tensor             # bound of |kernel d_student - grad| before rounding to the output dtype


def _keep(rows: int, labels: Optional[torch.Tensor], ignore_index: int, device) -> torch.Tensor:
    if labels is None:
        return torch.ones(rows, dtype=torch.bool, device=device)
    return labels != ignore_index


def jsd_logits(student: torch.Tensor, teacher: torch.Tensor, beta: float, s_scale: float = 1.0,
               t_scale: float = 1.0, labels: Optional[torch.Tensor] = None, ignore_index: int = -100,
               scale: float = 1.0, soft_coef: float = 1.0, hard_coef: float = 0.0,
               hard: bool = False) -> Result:
    """The op's outputs in float64 (see the module docstring); student [rows, ns], teacher
    [rows, nt >= ns]. ``hard``: compute hard_loss and add its gradient (labels required)."""
    rows, ns = student.shape
    nt = teacher.shape[1]
    if nt < ns:
        raise ValueError(f"teacher has {nt} columns, fewer than the student's {ns}")
    if hard and (labels is None or s_scale != 1.0 or ns != nt):
        raise ValueError("the hard loss needs labels, s_scale 1 and ns == nt")
    S = torch.zeros((rows, nt), dtype=torch.float64, device=student.device)
    S[:, :ns] = student.double() * s_scale
    T = teacher.double() * t_scale
    lse_s = torch.logsumexp(S, -1, keepdim=True)
    lse_t = torch.logsumexp(T, -1, keepdim=True)
    X, Y = S - lse_s, T - lse_t
    e = distill_ref.jsd(X, Y, beta)
    keep = _keep(rows, labels, ignore_index, student.device)
    k = keep[:, None].double()
    q = torch.exp(X)
    G = e.grad.sum(-1, keepdim=True)
    grad = scale * soft_coef * (e.grad - q * G)
    hard_loss = None
    if hard:
        y = labels.to(torch.int64)
        ok = keep & (y >= 0) & (y < ns)
        ys = torch.where(ok, y, torch.zeros_like(y))
        onehot = torch.zeros_like(q)
        onehot[ok, ys[ok]] = 1.0
        grad = grad + scale * hard_coef * (q - onehot)
        hl = lse_s[:, 0] - S.gather(1, ys[:, None])[:, 0]
        hard_loss = torch.where(ok, hl, torch.full_like(hl, float("nan")))
        hard_loss = torch.where(keep, hard_loss, torch.zeros_like(hl))
    loss = (e.loss * k).sum(-1)
    grad = (grad * k)[:, :ns]
    # The log-softmaxes' absolute fp32 error: a few roundings of |x|, |lse| and the log of n.
    lp_err = distill_ref.ELEM_ROUNDINGS * U32 * (S.abs() + lse_s.abs() + T.abs() + lse_t.abs() + 1)
    loss_err = ((e.loss_err + e.loss_mag * lp_err) * k).sum(-1) + distill_ref.SUM_REL * (e.loss_mag * k).sum(-1)
    gsum = e.grad.abs().sum(-1, keepdim=True)
    grad_err = abs(scale * soft_coef) * (e.grad_err + (e.grad.abs() + q * gsum) * lp_err +
                                         distill_ref.SUM_REL * q * gsum)
    if hard:
        grad_err = grad_err + abs(scale * hard_coef) * distill_ref.ELEM_ROUNDINGS * U32 * (q * (1 + lp_err) + 1)
    grad_err = (grad_err * k)[:, :ns]
    return Result(loss=loss, loss_err=loss_err, hard_loss=hard_loss, grad=grad, grad_err=grad_err)
