"""The total variation distance as a torch custom op, ``ligerd::tvd_fwd``, with a fake kernel and
autograd; the gradient is computed (and scaled by the reduction) in the forward, as Liger-Kernel
0.8.5's LigerTVDLossFunction does (kernels/ops/distill.cuh: one streaming pass over p and q).

    loss = 0.5 |p - q| per element           grad of p = 0.5 sign(p - q) (0 where p == q)
    reduction: "none" ([BT, V] fp32, ignored rows 0), "sum", "mean" (/ (count * V)),
    "batchmean" (/ count); count = rows whose shift_label is not ignore_index (all rows without
    labels). The gradient carries the same factor. The loss is fp32 (Liger's is).

Every row ignored: loss 0 and a zero gradient for every reduction (Liger raises
ZeroDivisionError there for "mean" and "batchmean", computing 1 / 0 on the host). The count stays
on the device (Liger's .item() syncs). In eager mode the backward scales the stored gradient in
place (a reduced loss: skipped on the device when grad_output is exactly 1; "none": an
elementwise product, out of place, as Liger); see ligerd.ops.jsd for what that means for a second
backward. q gets no gradient (Liger returns None). Different p and q dtypes are computed in the
wider one.

Executor op (kernels/ops/distill.cc): tvd_fwd [P, Q, labels?, n_valid?, loss out, grad? out]
scalars [reduction, ignore_index].
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ligerd import _backend
from ligerd.ops import _distill, _opdef, _rows

OP = "tvd"
REDUCTIONS = {"none": 0, "sum": 1, "mean": 2, "batchmean": 3}


def check_args(p, q, reduction, ignore_index) -> None:
    _distill.check_pair(OP, "p", p, "q", q, two_d=True)
    if reduction not in REDUCTIONS:
        _distill.fail(OP, f"reduction must be one of 'none', 'sum', 'mean', 'batchmean'. Got: {reduction!r}")
    _distill.check_ignore_index(OP, ignore_index)


@_opdef.custom_op("tvd_fwd")
def tvd_fwd(p: torch.Tensor, q: torch.Tensor, labels: Optional[torch.Tensor], n_valid: Optional[torch.Tensor],
            reduction: int, ignore_index: int, want_grad: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """(fp32 loss: (rows, n) for reduction 0, else [rows] row losses already scaled; the gradient
    of p in p's dtype, or an empty tensor). p, q: (rows, n) views the kernels read."""
    rows = p.shape[0]
    loss = torch.empty(tuple(p.shape) if reduction == 0 else (rows,), dtype=torch.float32, device=p.device)
    grad = torch.empty(tuple(p.shape) if want_grad else (0,), dtype=p.dtype, device=p.device)
    if rows > 0:
        _backend.call("tvd_fwd", P=p, Q=q, labels=labels, n_valid=n_valid, loss=loss, grad=grad if want_grad else None,
                      reduction=reduction, ignore_index=ignore_index)
    return loss, grad


@tvd_fwd.register_fake
def _(p, q, labels, n_valid, reduction, ignore_index, want_grad):
    return (p.new_empty(tuple(p.shape) if reduction == 0 else (p.shape[0],), dtype=torch.float32),
            p.new_empty(tuple(p.shape) if want_grad else (0,)))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1])


def _backward(ctx, dloss, _dgrad):
    (grad,) = ctx.saved_tensors
    if dloss is None or grad.numel() == 0:
        return (None,) * 7
    g = dloss.float() if dloss.dim() == 2 else dloss.float()[:, None]
    return ((grad.float() * g).to(grad.dtype),) + (None,) * 6


tvd_fwd.register_autograd(_backward, setup_context=_setup_context)


class _EagerTvd(torch.autograd.Function):
    """Eager mode: the forward's (already scaled) gradient is kept; the backward multiplies it by
    grad_output (in place for a scalar loss)."""

    @staticmethod
    def forward(ctx, p, q, labels, n_valid, reduction, ignore_index):
        loss, grad = tvd_fwd(p.detach(), q.detach(), labels, n_valid, reduction, ignore_index, True)
        ctx.save_for_backward(grad)
        ctx.elementwise = reduction == 0
        return loss if reduction == 0 else loss.sum()

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        if ctx.elementwise:
            g = (grad.float() * grad_output.float()).to(grad.dtype)
        else:
            g = _distill.scale_stored_grad_(grad, grad_output)
        return g, None, None, None, None, None


def tvd(p: torch.Tensor, q: torch.Tensor, shift_labels: Optional[torch.Tensor] = None, reduction: str = "batchmean",
        ignore_index: int = -100) -> torch.Tensor:
    """Liger's LigerTVDLossFunction.apply(p, q, shift_labels, reduction, ignore_index): p, q [BT, V];
    fp32 [BT, V] ("none") or an fp32 scalar."""
    check_args(p, q, reduction, ignore_index)
    labels = _distill.check_labels(OP, shift_labels, p.shape[0], p.device)
    a, b = _distill.promote(p, q)
    a2, b2 = _rows.as_rows(a), _rows.as_rows(b)
    n_valid = _distill.valid_count(labels, ignore_index)
    red = REDUCTIONS[reduction]
    if a.requires_grad and torch.is_grad_enabled() and _opdef.eager():
        return _EagerTvd.apply(a2, b2, labels, n_valid, red, ignore_index)
    want_grad = a.requires_grad and torch.is_grad_enabled()
    loss, _ = tvd_fwd(a2, b2, labels, n_valid, red, ignore_index, want_grad)
    return loss if red == 0 else loss.sum()
