"""LayerNorm as torch custom ops: ``ligerd::layer_norm_fwd`` and ``ligerd::layer_norm_bwd``, with
fake (meta) kernels and autograd.

    y = (x - mean) / sqrt(var + eps) * w + b      (over the last dimension; w, b optional)

As Liger-Kernel's LigerLayerNormFunction, computed in fp32 with one rounding of y; mean and rstd
are saved per row in fp32 (Liger rounds them to x's dtype: see kernels/ops/layer_norm.cuh for
why ligerd does not). dW and dB are reduced deterministically from fp32 per-block partial rows.

Executor ops (kernels/ops/layer_norm.cc):
- layer_norm_fwd: tensors [X, W (or None), B (or None), Y out, MEAN out fp32, RSTD out fp32],
  scalars [eps]
- layer_norm_bwd: tensors [dY, X, W (or None), MEAN, RSTD, dX out, dW out (or None), dB out (or
  None)], no scalars; dW, dB have the parameters' dtype.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ligerd import _backend
from ligerd.ops import _dtensor, _opdef, _rows

OP = "layer_norm"


def check_inputs(X, W, B) -> None:
    """Friendly checks before anything reaches C++ (which checks again)."""
    _rows.check_rows(OP, "X", X)
    _rows.check_param(OP, "W", W, X)
    _rows.check_param(OP, "B", B, X)
    if W is not None and B is not None and W.dtype != B.dtype:
        _rows.fail(OP, f"mixed dtypes: W is {W.dtype} but B is {B.dtype}; they must match")


# ---------------------------------------------------------------------------------------------
# Custom ops on 2-D (rows, hidden) tensors with a contiguous last dim (rows at any pitch).


@_opdef.custom_op("layer_norm_fwd")
def layer_norm_fwd(x: torch.Tensor, w: Optional[torch.Tensor], b: Optional[torch.Tensor],
                   eps: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (Y, MEAN, RSTD)."""
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    mean = torch.empty((x.shape[0],), dtype=torch.float32, device=x.device)
    rstd = torch.empty((x.shape[0],), dtype=torch.float32, device=x.device)
    if x.numel() > 0:
        _backend.call("layer_norm_fwd", X=x, W=w, B=b, Y=y, MEAN=mean, RSTD=rstd, eps=eps)
    return y, mean, rstd


@layer_norm_fwd.register_fake
def _(x, w, b, eps):
    y = x.new_empty(x.shape)
    return y, x.new_empty((x.shape[0],), dtype=torch.float32), x.new_empty((x.shape[0],), dtype=torch.float32)


@_opdef.custom_op("layer_norm_bwd")
def layer_norm_bwd(dy: torch.Tensor, x: torch.Tensor, w: Optional[torch.Tensor],
                   b: Optional[torch.Tensor], mean: torch.Tensor, rstd: torch.Tensor,
                   compute_dw: bool, compute_db: bool
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (dX, dW, dB); dW/dB are empty tensors when not wanted. ``b`` is only read for its
    dtype and shape (dB = sum of dY over rows)."""
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    dw = _rows.param_grad_buffer(x, w, compute_dw)
    db = _rows.param_grad_buffer(x, b, compute_db)
    if x.numel() > 0:  # without rows dW and dB are the zeros param_grad_buffer made
        _backend.call("layer_norm_bwd", dY=dy, X=x, W=w, MEAN=mean, RSTD=rstd, dX=dx, dW=dw, dB=db)
    empty = x.new_empty((0,))
    return dx, (dw if dw is not None else empty), (db if db is not None else empty.clone())


@layer_norm_bwd.register_fake
def _(dy, x, w, b, mean, rstd, compute_dw, compute_db):
    dx = x.new_empty(x.shape)
    dw = torch.empty_like(w) if (w is not None and compute_dw) else x.new_empty((0,))
    db = torch.empty_like(b) if (b is not None and compute_db) else x.new_empty((0,))
    return dx, dw, db


def _setup_context(ctx, inputs, output):
    x, w, b, eps = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, w, b, mean, rstd)
    ctx.has_w = w is not None
    ctx.has_b = b is not None


def _backward(ctx, dy, _dmean, _drstd):
    x, w, b, mean, rstd = ctx.saved_tensors
    compute_dw = bool(ctx.has_w and ctx.needs_input_grad[1])
    compute_db = bool(ctx.has_b and ctx.needs_input_grad[2])
    dx, dw, db = layer_norm_bwd(_rows.as_rows(dy), x, w, b, mean, rstd,
                                                 compute_dw, compute_db)
    return dx, (dw if compute_dw else None), (db if compute_db else None), None


layer_norm_fwd.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# Public entry points.


def layer_norm(X: torch.Tensor, W: Optional[torch.Tensor], B: Optional[torch.Tensor],
               eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm over the last dimension of a 1-D to 4-D CUDA tensor, differentiable in X, W, B.
    X may be a DTensor with whole rows and W, B replicated ones (ligerd.ops._dtensor)."""
    if _dtensor.any_dtensor(X, W, B):  # each rank's local rows
        return _dtensor.rowwise(OP, layer_norm, X, [W, B], eps)
    check_inputs(X, W, B)
    shape = X.shape
    y2, _, _ = layer_norm_fwd(_rows.as_rows(X), W, B, float(eps))
    return y2.view(shape)


class LigerLayerNormFunction:
    """Liger-Kernel's ``LigerLayerNormFunction.apply(X, W, B, eps)`` on ligerd's custom op (an
    autograd-aware torch op, so there is no autograd.Function to subclass)."""

    @staticmethod
    def apply(X, W, B, eps):
        return layer_norm(X, W, B, eps)
