"""KL divergence as torch custom ops: ``ligerd::kl_div_fwd`` and ``ligerd::kl_div_bwd``, with fake
kernels and autograd (eager, torch.compile(fullgraph=True), FSDP/DDP alike).

Liger-Kernel 0.8.5's LigerKLDivLossFunction, on ligerd's kernels (kernels/ops/distill.cuh):

    loss = t * (log(max(t, eps)) - x)            x = input log-probabilities, t = target
    loss = exp(t) * (t - x)                      with log_target
    reduction: "none" (per element, fp32), "sum", "mean" (/ numel), "batchmean" (/ size(0))
    dx = -t * g * factor   (or -exp(t) * ...)    factor: 1/size(0), 1/numel, or 1

As in Liger the gradient is not formed in the forward (it depends on the target alone): the
forward saves the target and the backward is one streaming kernel, ``dx`` rounded once. The loss
is fp32 whatever the input dtype (Liger's is). The target gets no gradient (Liger returns None).
Beyond Liger (whose kernels take [BT, V] only): 1-D to 4-D inputs, with nn.KLDivLoss's meaning of
the reductions ("batchmean" divides by size(0), "mean" by numel; for 2-D both agree with Liger's);
an input and target of different dtypes are computed in the wider one (exact, as Liger's kernels
upcast each on load).

Executor ops (kernels/ops/distill.cc):
- kl_div_fwd: [X, target, loss out]  scalars [log_target, reduction, eps]
- kl_div_bwd: [target, G, dX out]     scalars [log_target, scale]
"""

from __future__ import annotations

import math

import torch

from ligerd import _backend
from ligerd.ops import _distill, _opdef, _rows

OP = "kl_div"
# Liger's codes (ops/kl_div.py's _REDUCTION_MODE_*), the kernels' too (distill_params.h).
REDUCTIONS = {"none": 0, "sum": 1, "mean": 2, "batchmean": 3}


def check_args(y_pred, y_true, reduction, log_target, eps) -> None:
    """Friendly checks before anything reaches C++ (which checks again)."""
    _distill.check_pair(OP, "y_pred", y_pred, "y_true", y_true, two_d=False)
    if reduction not in REDUCTIONS:
        _distill.fail(OP, f"reduction must be one of 'none', 'sum', 'mean', 'batchmean'. Got: {reduction!r}")
    if not isinstance(log_target, (bool, int)):
        _distill.fail(OP, f"log_target must be a bool, got {log_target!r}")
    try:
        e = float(eps)
    except (TypeError, ValueError):
        e = float("nan")
    if not (math.isfinite(e) and e >= 0.0):
        _distill.fail(OP, f"eps must be a finite number >= 0, got {eps!r}")


def _factor(reduction: int, rows: int, n: int, batch: int) -> float:
    """The reduction's divisor as a factor (of the sum, and of the gradient)."""
    den = {3: batch, 2: rows * n}.get(reduction, 1)
    return 1.0 / den if den else 0.0


# ---------------------------------------------------------------------------------------------
# Custom ops on (rows, n) tensors the kernels read (contiguous last dim, rows at one pitch).


@_opdef.custom_op("kl_div_fwd")
def kl_div_fwd(x: torch.Tensor, target: torch.Tensor, log_target: bool, reduction: int, eps: float,
               batch: int) -> torch.Tensor:
    """reduction 0 ("none"): fp32 (rows, n) element losses; otherwise the reduced fp32 scalar:
    the sum (1), the sum / (rows * n) (2, "mean"), the sum / batch (3, "batchmean")."""
    rows, n = x.shape
    if reduction == 0:
        loss = torch.empty((rows, n), dtype=torch.float32, device=x.device)
    else:
        loss = torch.empty(rows, dtype=torch.float32, device=x.device)
    if rows > 0:
        _backend.call("kl_div_fwd", X=x, target=target, loss=loss, log_target=1 if log_target else 0,
                      reduction=reduction, eps=eps)
    if reduction == 0:
        return loss
    total = loss.sum()
    if reduction == 1:
        return total
    # Liger divides the fp32 sum by the divisor (not by a rounded reciprocal); 0 rows give NaN.
    return total / (batch if reduction == 3 else rows * n)


@kl_div_fwd.register_fake
def _(x, target, log_target, reduction, eps, batch):
    return x.new_empty(tuple(x.shape) if reduction == 0 else (), dtype=torch.float32)


@_opdef.custom_op("kl_div_bwd")
def kl_div_bwd(target: torch.Tensor, g: torch.Tensor, log_target: bool, scale: float) -> torch.Tensor:
    """dX = -(target or exp(target)) * g * scale; g fp32, one element or (rows, n)."""
    dx = torch.empty_like(target, memory_format=torch.contiguous_format)
    if target.shape[0] > 0:
        _backend.call("kl_div_bwd", target=target, G=g, dX=dx, log_target=1 if log_target else 0, scale=scale)
    return dx


@kl_div_bwd.register_fake
def _(target, g, log_target, scale):
    return torch.empty_like(target, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    x, target, log_target, reduction, eps, batch = inputs
    ctx.save_for_backward(target)
    ctx.log_target = log_target
    ctx.reduction = reduction
    ctx.scale = _factor(reduction, x.shape[0], x.shape[1], batch)


def _backward(ctx, dloss):
    (target,) = ctx.saved_tensors
    if ctx.reduction == 0:
        g = _rows.as_rows(dloss if dloss.dtype == torch.float32 else dloss.float())
    else:
        g = dloss.detach().reshape(1).to(torch.float32)
    return kl_div_bwd(target, g, ctx.log_target, ctx.scale), None, None, None, None, None


kl_div_fwd.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# Public entry point (what ligerd.transformers calls).


def kl_div(y_pred: torch.Tensor, y_true: torch.Tensor, reduction: str = "batchmean", log_target: bool = False,
           eps: float = 1e-10) -> torch.Tensor:
    """Liger's LigerKLDivLossFunction.apply(y_pred, y_true, reduction, log_target, eps): KL(y_true ||
    exp(y_pred)), y_pred in log space; fp32 loss of y_pred's shape ("none") or a scalar."""
    check_args(y_pred, y_true, reduction, log_target, eps)
    x, t = _distill.promote(y_pred, y_true)
    shape = x.shape
    red = REDUCTIONS[reduction]
    out = kl_div_fwd(_rows.as_rows(x), _rows.as_rows(t), bool(log_target), red, float(eps), int(shape[0]))
    return out.view(shape) if red == 0 else out
