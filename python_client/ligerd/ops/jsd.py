"""The generalised Jensen-Shannon divergence as a torch custom op, ``ligerd::jsd_fwd``, with a fake
kernel and autograd; the gradient is computed in the forward, as Liger-Kernel 0.8.5's
LigerJSDFunction does (kernels/ops/distill.cuh: one streaming pass over both inputs).

    X = log q (student, the input), Y = log p (teacher, the target), Q = e^X, P = e^Y
    beta == 0:  sum P (Y - X)                                     (forward KL, Liger's special case)
    beta == 1:  sum Q (X - Y)                                     (reverse KL)
    otherwise:  sum beta P (Y - log M) + (1 - beta) Q (X - log M),  M = beta P + (1 - beta) Q
    divided by the count of rows whose shift_label is not ignore_index (all rows without labels);
    ignored rows add 0 and get a zero gradient; every row ignored: loss 0, gradient 0.

The loss is returned in the input's dtype (Liger's ``loss.to(_input.dtype)``); the gradient is
stored by the forward in the input's dtype and, in eager mode, scaled in place by the backward's
grad_output, skipped on the device when that is exactly 1 (Liger compares on the host with
torch.equal, a sync, and multiplies out of place otherwise). Like ligerd's cross-entropy, that
makes a second backward through one retained graph an autograd error (the saved gradient was
modified in place), never a silently wrong gradient. Under torch.compile the backward is
``grad * grad_output``. The count of non-ignored rows stays on the device (Liger's .item() syncs).
No temperature, as in Liger's LigerJSD (the fused linear JSD has one). Different input and
target dtypes are computed in the wider one. beta outside [0, 1] is refused (Liger does not check).

Executor op (kernels/ops/distill.cc): jsd_fwd [X, Y, labels?, n_valid?, loss out, dX? out]
scalars [beta, ignore_index].
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from ligerd import _backend
from ligerd.ops import _distill, _opdef, _rows

OP = "jsd"


def check_args(x, y, beta, ignore_index) -> None:
    _distill.check_pair(OP, "input", x, "target", y, two_d=True)
    try:
        b = float(beta)
    except (TypeError, ValueError):
        b = float("nan")
    if not (math.isfinite(b) and 0.0 <= b <= 1.0):
        _distill.fail(OP, f"beta must be in [0, 1] (0: forward KL, 1: reverse KL), got {beta!r}")
    _distill.check_ignore_index(OP, ignore_index)


@_opdef.custom_op("jsd_fwd")
def jsd_fwd(x: torch.Tensor, y: torch.Tensor, labels: Optional[torch.Tensor], n_valid: Optional[torch.Tensor],
            beta: float, ignore_index: int, want_grad: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """(fp32 [rows] row losses already divided by the count, dX in x's dtype or an empty tensor).
    x, y: (rows, n) views the kernels read; labels int64 [rows] with n_valid int64 [1] (its count
    of labels != ignore_index), or both None. Also the per-chunk step of a fused linear JSD."""
    rows = x.shape[0]
    loss = torch.empty(rows, dtype=torch.float32, device=x.device)
    grad = torch.empty(tuple(x.shape) if want_grad else (0,), dtype=x.dtype, device=x.device)
    if rows > 0:
        _backend.call("jsd_fwd", X=x, Y=y, labels=labels, n_valid=n_valid, loss=loss,
                      dX=grad if want_grad else None, beta=beta, ignore_index=ignore_index)
    return loss, grad


@jsd_fwd.register_fake
def _(x, y, labels, n_valid, beta, ignore_index, want_grad):
    return (x.new_empty(x.shape[0], dtype=torch.float32), x.new_empty(tuple(x.shape) if want_grad else (0,)))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1])


def _backward(ctx, dloss, _dgrad):
    (grad,) = ctx.saved_tensors
    if dloss is None or grad.numel() == 0:
        return (None,) * 7
    return ((grad.float() * dloss.float()[:, None]).to(grad.dtype),) + (None,) * 6


jsd_fwd.register_autograd(_backward, setup_context=_setup_context)


class _EagerJsd(torch.autograd.Function):
    """Eager mode: the forward's gradient is kept and scaled in place by the backward."""

    @staticmethod
    def forward(ctx, x, y, labels, n_valid, beta, ignore_index):
        loss, grad = jsd_fwd(x.detach(), y.detach(), labels, n_valid, beta, ignore_index, True)
        ctx.save_for_backward(grad)
        return loss.sum().to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return _distill.scale_stored_grad_(grad, grad_output), None, None, None, None, None


def jsd(input: torch.Tensor, target: torch.Tensor, shift_labels: Optional[torch.Tensor] = None, beta: float = 0.5,
        ignore_index: int = -100) -> torch.Tensor:
    """Liger's LigerJSDFunction.apply(input, target, shift_labels, beta, ignore_index): input and
    target [BT, V] log-probabilities (student, teacher); a scalar in input's dtype."""
    check_args(input, target, beta, ignore_index)
    labels = _distill.check_labels(OP, shift_labels, input.shape[0], input.device)
    dtype = input.dtype
    x, y = _distill.promote(input, target)
    x2, y2 = _rows.as_rows(x), _rows.as_rows(y)
    n_valid = _distill.valid_count(labels, ignore_index)
    beta = float(beta)
    if x.requires_grad and torch.is_grad_enabled() and _opdef.eager():
        return _EagerJsd.apply(x2, y2, labels, n_valid, beta, ignore_index).to(dtype)
    want_grad = x.requires_grad and torch.is_grad_enabled()
    loss, _ = jsd_fwd(x2, y2, labels, n_valid, beta, ignore_index, want_grad)
    return loss.sum().to(dtype)
