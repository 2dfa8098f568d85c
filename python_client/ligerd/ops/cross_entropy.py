"""Cross-entropy as torch custom ops, with Liger's semantics and memory trick.

The loss and the gradient of the logits are computed together in the forward pass (one kernel,
two reads of each row; see kernels/ops/cross_entropy.cuh). In eager mode the gradient is written
over the logits tensor itself, as Liger does: after the forward, the tensor passed as logits holds
the gradient (do not reuse it), and no buffer the size of the logits is allocated. The backward
multiplies that stored gradient by grad_output in place, and skips even that when grad_output is
exactly 1.0 (decided on the device: no host sync). Under torch.compile the functional op
``ligerd::cross_entropy_fwd`` returns a fresh gradient instead (AOTAutograd does not let a forward
graph mutate an input that requires grad); the backward is then ``grad * grad_output``.

Semantics (Liger's liger_cross_entropy_kernel, torch's for label smoothing and weights): class
weights, ignore_index (ignored rows: loss 0, gradient 0, predicted token -1), label smoothing,
z-loss (lse_square_scale * lse^2, unweighted, divided by the non-ignored count for "mean"), softcap
(``c * tanh(x / c)`` with its chain rule), reductions "mean" (divided by the (weighted) count of
non-ignored tokens, as torch), "sum" and "none", and use_token_scaling (for the fused linear loss).
All rows ignored: loss 0 and gradient 0 for every reduction (Liger's result; torch returns NaN for
"mean" there, 0/0). A target outside [0, V) that is not ignore_index raises OpInputError in eager
mode (one host sync, as Liger's assert); under torch.compile or CUDA-graph capture the check cannot
sync, and the kernel instead gives that row a NaN loss and gradient (never reads out of bounds).

Executor ops (kernels/ops/cross_entropy.cc):
- cross_entropy_count: [target, weight?, denom out]  scalars [ignore_index, num_classes]
- cross_entropy_fwd: [X, target, weight?, denom, row_scale?, dX? out (may be X), loss out,
  z_loss? out, pred? out]  scalars [ignore_index, lse_square_scale, label_smoothing, reduction,
  softcap, token_scaling]
- cross_entropy_scale: [G out (scaled in place), s]
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from ligerd import _backend, _dispatch
from ligerd._errors import OpInputError
from ligerd.ops import _opdef

OP = "cross_entropy"
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}
_SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_EMPTY = 0  # size of the placeholder returned for an output that was not asked for


def _fail(msg: str, op: str = OP):
    raise OpInputError(f"ligerd op {op}: {msg}", op=op)


def check_args(x, target, weight, ignore_index, lse_square_scale, label_smoothing, reduction,
               softcap, op: str = OP) -> None:
    """Friendly checks before anything reaches C++ (which checks again)."""
    if not isinstance(x, torch.Tensor):
        _fail(f"input must be a torch.Tensor, got {type(x).__name__}", op)
    if not isinstance(target, torch.Tensor):
        _fail(f"target must be a torch.Tensor, got {type(target).__name__}", op)
    if not x.is_cuda and not _backend.cpu_allowed():
        _fail(f"input must be a CUDA tensor, got a tensor on {x.device}", op)
    if x.dtype not in _SUPPORTED_DTYPES:
        _fail(f"input has dtype {x.dtype}; supported: float32, bfloat16, float16", op)
    if x.dim() != 2:
        _fail(f"input must be 2-D (tokens, vocab), got shape {tuple(x.shape)}", op)
    if target.dim() != 1 or target.shape[0] != x.shape[0]:
        _fail(f"target must be 1-D with one class index per row of input ({x.shape[0]}), got shape "
              f"{tuple(target.shape)}", op)
    if target.dtype not in (torch.int64, torch.int32):
        _fail(f"target must hold class indices (int64), got dtype {target.dtype}", op)
    if target.device != x.device:
        _fail(f"target is on {target.device} but input is on {x.device}", op)
    if weight is not None:
        if not isinstance(weight, torch.Tensor) or not torch.is_floating_point(weight):
            _fail("weight must be a floating-point tensor of size V", op)
        if weight.dim() != 1 or weight.shape[0] != x.shape[1]:
            _fail(f"weight has shape {tuple(weight.shape)}, expected ({x.shape[1]},) (one per class)", op)
        if weight.device != x.device:
            _fail(f"weight is on {weight.device} but input is on {x.device}", op)
    if not isinstance(ignore_index, int) or isinstance(ignore_index, bool):
        _fail(f"ignore_index must be an int, got {ignore_index!r}", op)
    if not (0.0 <= float(label_smoothing) <= 1.0):
        _fail(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}", op)
    if reduction not in REDUCTIONS:
        _fail(f"reduction must be one of 'mean', 'sum', or 'none'. Got: {reduction}", op)
    if softcap is not None and not float(softcap) > 0:
        _fail(f"softcap must greater than 0.0 or None. Got: {softcap}", op)
    if not math.isfinite(float(lse_square_scale)):
        _fail(f"lse_square_scale must be finite, got {lse_square_scale}", op)


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """x itself when the kernel can read it (contiguous last dim, rows at any pitch), else a
    contiguous copy (then the in-place gradient lands in the copy, which is what is returned)."""
    if x.stride(-1) == 1 or x.shape[-1] == 1:
        if x.shape[0] <= 1 or x.stride(0) >= x.shape[-1]:
            return x
    return x.contiguous()


def _can_sync() -> bool:
    if not _opdef.eager():  # compiled or traced: no host sync possible
        return False
    try:
        return not torch.cuda.is_current_stream_capturing()
    except Exception:  # CPU-only torch builds
        return True


def check_targets(denom: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int,
                  op: str = OP) -> None:
    """Raise on targets outside [0, V) that are not ignore_index (eager only: one host sync)."""
    check_targets_later(denom, target, num_classes, ignore_index, op)()


def check_targets_later(denom: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int,
                        op: str = OP):
    """check_targets in two halves: the count's copy to the host is queued now, and the returned
    function raises (after waiting for that copy only) when called. A caller that queues GPU work
    in between (the fused loss queues its first chunk) keeps the GPU busy while the host waits."""
    if not _can_sync():
        return lambda: None
    if not denom.is_cuda:
        return lambda: _raise_if_bad(int(denom[3].item()), target, num_classes, ignore_index, op)
    host = torch.empty(1, dtype=denom.dtype, pin_memory=True)
    host.copy_(denom[3:4], non_blocking=True)
    done = torch.cuda.Event()
    done.record()

    def finish():
        done.synchronize()
        _raise_if_bad(int(host[0]), target, num_classes, ignore_index, op)
    return finish


def _raise_if_bad(bad: int, target, num_classes, ignore_index, op) -> None:
    if bad:
        # The count may come from a daemon that died before writing it (the client then releases
        # the GPU's wait: the buffer holds whatever was there). Blaming the targets would be wrong:
        # raise DaemonUnavailableError as ligerd.synchronize() would.
        if target.is_cuda:
            _dispatch.synchronize(target.device)
        valid = target != ignore_index
        t = target[valid]
        lo, hi = int(t.min().item()), int(t.max().item())
        _fail(f"{bad} target(s) out of bounds: expected class indices in [0, {num_classes}) or "
              f"ignore_index={ignore_index}, got values in [{lo}, {hi}]", op)


# ---------------------------------------------------------------------------------------------
# Custom ops.


@_opdef.custom_op("cross_entropy_count")
def cross_entropy_count(target: torch.Tensor, weight: Optional[torch.Tensor], num_classes: int,
                        ignore_index: int) -> torch.Tensor:
    """fp32 [4]: non-ignored count, sum of weight[target] (= count without weight), sum of
    weight, count of out-of-range targets."""
    denom = torch.empty(4, dtype=torch.float32, device=target.device)
    _backend.call("cross_entropy_count", target=target, weight=weight, denom=denom, ignore_index=ignore_index,
                  num_classes=num_classes)
    return denom


@cross_entropy_count.register_fake
def _(target, weight, num_classes, ignore_index):
    return target.new_empty(4, dtype=torch.float32)


def _outputs(x, want_z, want_pred):
    rows = x.shape[0]
    loss = torch.empty(rows, dtype=torch.float32, device=x.device)
    z = torch.empty(rows if want_z else _EMPTY, dtype=torch.float32, device=x.device)
    pred = torch.empty(rows if want_pred else _EMPTY, dtype=torch.int64, device=x.device)
    return loss, z, pred


def _scalars(ignore_index, lse_square_scale, label_smoothing, reduction, softcap, token_scaling):
    return dict(ignore_index=ignore_index, lse_square_scale=lse_square_scale, label_smoothing=label_smoothing,
                reduction=reduction, softcap=softcap, token_scaling=1 if token_scaling else 0)


def _launch_fwd(x, target, weight, denom, row_scale, dx, loss, z, pred, scalars):
    if x.shape[0] == 0:
        return
    _backend.call("cross_entropy_fwd", X=x, target=target, weight=weight, denom=denom, row_scale=row_scale,
                  dX=dx, loss=loss, z_loss=z if z.numel() else None, pred=pred if pred.numel() else None,
                  **scalars)


@_opdef.custom_op("cross_entropy_fwd")
def cross_entropy_fwd(x: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor],
                      denom: torch.Tensor, ignore_index: int, lse_square_scale: float,
                      label_smoothing: float, reduction: int, softcap: float, token_scaling: bool,
                      want_z: bool, want_pred: bool, want_grad: bool
                      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (loss_rows fp32, z_rows fp32 or empty, pred int64 or empty, fresh grad or empty)."""
    loss, z, pred = _outputs(x, want_z, want_pred)
    grad = torch.empty(x.shape if want_grad else (0,), dtype=x.dtype, device=x.device)
    _launch_fwd(x, target, weight, denom, None, grad if want_grad else None, loss, z, pred,
                _scalars(ignore_index, lse_square_scale, label_smoothing, reduction, softcap, token_scaling))
    return loss, z, pred, grad


@cross_entropy_fwd.register_fake
def _(x, target, weight, denom, ignore_index, lse_square_scale, label_smoothing, reduction, softcap,
      token_scaling, want_z, want_pred, want_grad):
    rows = x.shape[0]
    return (x.new_empty(rows, dtype=torch.float32), x.new_empty(rows if want_z else _EMPTY, dtype=torch.float32),
            x.new_empty(rows if want_pred else _EMPTY, dtype=torch.int64),
            x.new_empty(x.shape if want_grad else (0,)))


def _fwd_setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[3])


def _fwd_backward(ctx, dloss, _dz, _dpred, _dgrad):
    (grad,) = ctx.saved_tensors
    if dloss is None or grad.numel() == 0:
        return (None,) * 13
    return (grad * dloss.to(grad.dtype).unsqueeze(1),) + (None,) * 12


cross_entropy_fwd.register_autograd(_fwd_backward, setup_context=_fwd_setup_context)


@_opdef.custom_op("cross_entropy_fwd_inplace", mutates_args=("x",))
def cross_entropy_fwd_inplace(x: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor],
                              denom: torch.Tensor, row_scale: Optional[torch.Tensor], ignore_index: int,
                              lse_square_scale: float, label_smoothing: float, reduction: int,
                              softcap: float, token_scaling: bool, want_z: bool, want_pred: bool
                              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Writes the gradient of the logits over x (times row_scale[r] per row when given); returns
    (loss_rows fp32, z_rows fp32 or empty, pred int64 or empty)."""
    loss, z, pred = _outputs(x, want_z, want_pred)
    _launch_fwd(x, target, weight, denom, row_scale, x, loss, z, pred,
                _scalars(ignore_index, lse_square_scale, label_smoothing, reduction, softcap, token_scaling))
    return loss, z, pred


@cross_entropy_fwd_inplace.register_fake
def _(x, target, weight, denom, row_scale, ignore_index, lse_square_scale, label_smoothing, reduction,
      softcap, token_scaling, want_z, want_pred):
    rows = x.shape[0]
    return (x.new_empty(rows, dtype=torch.float32), x.new_empty(rows if want_z else _EMPTY, dtype=torch.float32),
            x.new_empty(rows if want_pred else _EMPTY, dtype=torch.int64))


@_opdef.custom_op("cross_entropy_scale_", mutates_args=("g",))
def cross_entropy_scale_(g: torch.Tensor, s: torch.Tensor) -> None:
    """g[r, :] *= s (s: fp32 [1] or [rows]) in place; rows whose factor is exactly 1.0 are skipped."""
    if g.numel() > 0:
        _backend.call("cross_entropy_scale", G=g, s=s)


@cross_entropy_scale_.register_fake
def _(g, s):
    return None


def scale_(g: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    """g *= grad_output (a scalar, or one per row of g viewed as 2-D), in place; returns g."""
    g2 = g if g.dim() == 2 else g.view(1, -1) if g.dim() == 1 else g.view(-1, g.shape[-1])
    s = grad_output.detach().reshape(-1).to(torch.float32)
    if not s.is_contiguous():
        s = s.contiguous()
    cross_entropy_scale_(g2, s)
    return g


# ---------------------------------------------------------------------------------------------
# Autograd in eager mode: the in-place forward (Liger's LigerCrossEntropyFunction, on our kernel).


class _InPlaceCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, target, weight32, denom, ignore_index, lse_square_scale, label_smoothing,
                reduction, softcap, want_z, want_pred):
        xr = as_rows(x)
        loss, z, pred = cross_entropy_fwd_inplace(
            xr.detach(), target, weight32, denom, None, ignore_index, lse_square_scale,
            label_smoothing, reduction, softcap, False, want_z, want_pred)
        ctx.save_for_backward(xr.detach())
        ctx.mark_non_differentiable(pred)
        return loss, z, pred

    @staticmethod
    def backward(ctx, dloss, _dz, _dpred):
        (grad,) = ctx.saved_tensors
        if dloss is None:
            return (None,) * 11
        return (scale_(grad, dloss),) + (None,) * 10


# ---------------------------------------------------------------------------------------------
# Public entry point (what ligerd.transformers calls).


def cross_entropy(x: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None,
                  ignore_index: int = -100, lse_square_scale: float = 0.0, label_smoothing: float = 0.0,
                  reduction: str = "mean", softcap: Optional[float] = None, return_z_loss: bool = False,
                  return_token_accuracy: bool = False, return_predicted_tokens: bool = False):
    """Liger's LigerCrossEntropyFunction.apply: returns (loss, z_loss, token_accuracy,
    predicted_tokens), the last three None unless asked for. x: [BT, V] logits (fp32/bf16/fp16),
    target: [BT] class indices. Loss and z_loss in x's dtype (as Liger), accuracy fp32."""
    check_args(x, target, weight, ignore_index, lse_square_scale, label_smoothing, reduction, softcap)
    for name, flag in (("return_z_loss", return_z_loss), ("return_token_accuracy", return_token_accuracy),
                       ("return_predicted_tokens", return_predicted_tokens)):
        if not isinstance(flag, bool):
            _fail(f"{name} must be True or False. Got: {flag}")
    if target.dtype != torch.int64:
        target = target.long()
    V = x.shape[1]
    weight32 = None
    if weight is not None:
        weight32 = weight.detach().to(torch.float32).contiguous()
    red = REDUCTIONS[reduction]
    cap = float(softcap) if softcap is not None else 0.0
    want_pred = return_token_accuracy or return_predicted_tokens
    denom = cross_entropy_count(target, weight32, V, ignore_index)
    check_targets(denom, target, V, ignore_index)
    args = (ignore_index, float(lse_square_scale), float(label_smoothing), red, cap)

    if x.requires_grad and torch.is_grad_enabled() and _opdef.eager():
        loss_rows, z_rows, pred = _InPlaceCrossEntropy.apply(x, target, weight32, denom, *args,
                                                             return_z_loss, want_pred)
    else:
        want_grad = x.requires_grad and torch.is_grad_enabled()
        loss_rows, z_rows, pred, _ = cross_entropy_fwd(
            as_rows(x), target, weight32, denom, *args, False, return_z_loss, want_pred, want_grad)

    if reduction == "none":
        loss = loss_rows.to(x.dtype)
        z_loss = z_rows.to(x.dtype) if return_z_loss else None
    else:
        loss = loss_rows.sum().to(x.dtype)
        z_loss = z_rows.sum().to(x.dtype) if return_z_loss else None
    token_accuracy = None
    if return_token_accuracy:
        acc = ((pred == target) & (target != ignore_index)).to(torch.float32)
        token_accuracy = acc if reduction == "none" else acc.sum() / denom[0]
    predicted_tokens = pred if return_predicted_tokens else None
    return loss, z_loss, token_accuracy, predicted_tokens
