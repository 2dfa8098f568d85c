"""Fused residual add + RMSNorm as torch custom ops: ``ligerd::fused_add_rms_norm_fwd``,
``ligerd::fused_add_rms_norm_bwd`` and ``ligerd::fused_add_rms_norm_bwd_inplace``, with fake
kernels and autograd.

    S = X + R (in X's dtype, as torch's ``residual + hidden_states``);  Y = rmsnorm(S)
    returns (Y, S): the normalised hidden states and the new residual.

As Liger-Kernel's LigerFusedAddRMSNormFunction: the kernels are RMSNorm's (kernels/ops/rms_norm.cuh
compiled with the add fused into the row load), casting modes as ``ligerd.ops.rms_norm``; the
backward receives (dY, dS), recomputes from the saved S and returns dX = dR = rmsnorm_bwd(dY) + dS.
``in_place`` writes that gradient over dY (eager mode only, as for RMSNorm).

Executor ops (kernels/ops/rms_norm.cc):
- fused_add_rms_norm_fwd: tensors [X, R, W, Y out, S out, RSTD out fp32], scalars [eps, offset, mode]
- fused_add_rms_norm_bwd: tensors [dY, dS (or None), S, W, RSTD, dX out (may be dY), dW out (or
  None)], scalars [offset, mode]
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ligerd import _backend
from ligerd.ops import _opdef, _rows
from ligerd.ops.rms_norm import casting_mode_id

OP = "fused_add_rms_norm"


def check_inputs(X, R, W) -> None:
    _rows.check_rows(OP, "X", X)
    _rows.check_rows(OP, "R", R, like=X)
    if W is None:
        _rows.fail(OP, "W is required (the fused op always has a weight, as in Liger)")
    _rows.check_param(OP, "W", W, X)


@_opdef.custom_op("fused_add_rms_norm_fwd")
def fused_add_rms_norm_fwd(x: torch.Tensor, r: torch.Tensor, w: torch.Tensor, eps: float,
                           offset: float, casting_mode: int, in_place: bool
                           ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (Y, S, RSTD). ``in_place`` is only recorded for the backward."""
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    s = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    rstd = torch.empty((x.shape[0],), dtype=torch.float32, device=x.device)
    if x.numel() > 0:
        _backend.call("fused_add_rms_norm_fwd", X=x, R=r, W=w, Y=y, S=s, RSTD=rstd, eps=eps, offset=offset,
                      casting_mode=casting_mode)
    return y, s, rstd


@fused_add_rms_norm_fwd.register_fake
def _(x, r, w, eps, offset, casting_mode, in_place):
    return x.new_empty(x.shape), x.new_empty(x.shape), x.new_empty((x.shape[0],), dtype=torch.float32)


@_opdef.custom_op("fused_add_rms_norm_bwd")
def fused_add_rms_norm_bwd(dy: torch.Tensor, ds: Optional[torch.Tensor], s: torch.Tensor,
                           w: torch.Tensor, rstd: torch.Tensor, offset: float, casting_mode: int,
                           compute_dw: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Returns (dX, dW); dW is an empty tensor when the weight needs no gradient."""
    dx = torch.empty(s.shape, dtype=s.dtype, device=s.device)
    dw = _rows.param_grad_buffer(s, w, compute_dw)
    if s.numel() > 0:
        _backend.call("fused_add_rms_norm_bwd", dY=dy, dS=ds, S=s, W=w, RSTD=rstd, dX=dx, dW=dw, offset=offset,
                      casting_mode=casting_mode)
    return dx, (dw if dw is not None else s.new_empty((0,)))


@fused_add_rms_norm_bwd.register_fake
def _(dy, ds, s, w, rstd, offset, casting_mode, compute_dw):
    return s.new_empty(s.shape), (torch.empty_like(w) if compute_dw else s.new_empty((0,)))


@_opdef.custom_op("fused_add_rms_norm_bwd_inplace", mutates_args=("dy",))
def fused_add_rms_norm_bwd_inplace(dy: torch.Tensor, ds: Optional[torch.Tensor], s: torch.Tensor,
                                   w: torch.Tensor, rstd: torch.Tensor, offset: float,
                                   casting_mode: int, compute_dw: bool) -> torch.Tensor:
    """Writes dX over dY (Liger's in_place=True); returns dW (empty when not wanted)."""
    dw = _rows.param_grad_buffer(s, w, compute_dw)
    if s.numel() > 0:
        _backend.call("fused_add_rms_norm_bwd", dY=dy, dS=ds, S=s, W=w, RSTD=rstd, dX=dy, dW=dw, offset=offset,
                      casting_mode=casting_mode)
    return dw if dw is not None else s.new_empty((0,))


@fused_add_rms_norm_bwd_inplace.register_fake
def _(dy, ds, s, w, rstd, offset, casting_mode, compute_dw):
    return torch.empty_like(w) if compute_dw else s.new_empty((0,))


def _setup_context(ctx, inputs, output):
    x, r, w, eps, offset, casting_mode, in_place = inputs
    _, s, rstd = output
    ctx.save_for_backward(s, w, rstd)
    # An output nothing used gets None, not a zeros tensor: when S feeds no later op, dS is not
    # read at all (a zeros dS would cost a full extra read of M x N in the backward).
    ctx.set_materialize_grads(False)
    ctx.offset = offset
    ctx.casting_mode = casting_mode
    ctx.in_place = in_place


def _backward(ctx, dy, ds, _drstd):
    s, w, rstd = ctx.saved_tensors
    compute_dw = bool(ctx.needs_input_grad[2])
    dy = torch.zeros_like(s) if dy is None else _rows.as_rows(dy)
    if ds is not None:
        ds = _rows.as_rows(ds)
    if ctx.in_place and dy.is_contiguous():
        dw = fused_add_rms_norm_bwd_inplace(dy, ds, s, w, rstd, ctx.offset,
                                                             ctx.casting_mode, compute_dw)
        dx = dy
    else:
        dx, dw = fused_add_rms_norm_bwd(dy, ds, s, w, rstd, ctx.offset,
                                                         ctx.casting_mode, compute_dw)
    # dR is dX (d(X + R)/dR = d(X + R)/dX), the same tensor, as Liger returns it.
    return dx, dx, (dw if compute_dw else None), None, None, None, None


fused_add_rms_norm_fwd.register_autograd(_backward, setup_context=_setup_context)


def fused_add_rms_norm(X: torch.Tensor, R: torch.Tensor, W: torch.Tensor, eps: float = 1e-6,
                       offset: float = 0.0, casting_mode="llama", in_place: bool = False
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(rmsnorm(X + R), X + R) over the last dimension of 1-D to 4-D CUDA tensors."""
    check_inputs(X, R, W)
    mode = casting_mode_id(casting_mode)
    # As for RMSNorm: AOTAutograd forbids a backward that mutates its inputs, so in_place only
    # applies in eager mode (decided while Dynamo traces the forward).
    in_place = bool(in_place) and _opdef.eager()
    shape = X.shape
    y2, s2, _ = fused_add_rms_norm_fwd(_rows.as_rows(X), _rows.as_rows(R), W,
                                                        float(eps), float(offset), mode, in_place)
    return y2.view(shape), s2.view(shape)


class LigerFusedAddRMSNormFunction:
    """Liger-Kernel's ``LigerFusedAddRMSNormFunction.apply(X, R, W, eps, offset=0.0,
    casting_mode="llama", in_place=False)`` on ligerd's custom op."""

    @staticmethod
    def apply(X, R, W, eps, offset=0.0, casting_mode="llama", in_place=False):
        return fused_add_rms_norm(X, R, W, eps, offset, casting_mode, in_place)
