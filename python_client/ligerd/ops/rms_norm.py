"""RMSNorm as torch custom ops: ``ligerd::rms_norm_fwd``, ``ligerd::rms_norm_bwd`` and
``ligerd::rms_norm_bwd_inplace``, with fake (meta) kernels and autograd, so eager mode,
``torch.compile(fullgraph=True)`` and FSDP/DDP all see ordinary tensors.

    y = x / sqrt(mean(x^2) + eps) * (offset + w)

Casting modes, as in Liger-Kernel:
- ``"llama"`` (0): rstd in fp32; the normalised x is cast back to x's dtype before the weight multiply.
- ``"gemma"`` (1): everything in fp32, cast to x's dtype at the end.
- ``"none"``  (2): computed in x's dtype.
The executor ops (kernels/ops/rms_norm.cc) take:
- rms_norm_fwd: tensors [X, W (or None), Y out, RSTD out fp32 [rows]], scalars [eps, offset, mode]
- rms_norm_bwd: tensors [dY, X, W (or None), RSTD, dX out (may be dY), dW out (or None)],
  scalars [offset, mode]; dW has W's dtype.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ligerd import _backend
from ligerd._errors import OpInputError
from ligerd.ops import _dtensor, _opdef, _rows

OP = "rms_norm"
CASTING_MODES = {"llama": 0, "gemma": 1, "none": 2}


def casting_mode_id(casting_mode) -> int:
    """Liger accepts the mode as a string or as its integer id."""
    if type(casting_mode) is str:  # the common case, one dict probe (per call: keep it cheap)
        mode = CASTING_MODES.get(casting_mode)
        if mode is not None:
            return mode
    if isinstance(casting_mode, bool):
        pass
    elif isinstance(casting_mode, int) and casting_mode in CASTING_MODES.values():
        return int(casting_mode)
    elif isinstance(casting_mode, str) and casting_mode.lower() in CASTING_MODES:
        return CASTING_MODES[casting_mode.lower()]
    raise OpInputError(f"ligerd op {OP}: casting_mode must be one of 'llama', 'gemma', 'none' "
                       f"(or 0, 1, 2); got {casting_mode!r}", op=OP)


def check_inputs(X, W) -> None:
    """Friendly checks before anything reaches C++ (which checks again, as a second line);
    run on every call (see ligerd.ops._rows)."""
    _rows.check_rows(OP, "X", X)
    _rows.check_param(OP, "W", W, X)


# The kernels read rows at any pitch; see ligerd.ops._rows.as_rows.
_as_rows = _rows.as_rows


# ---------------------------------------------------------------------------------------------
# Custom ops. They take 2-D (rows, hidden) tensors with a contiguous last dim (rows at any
# pitch); the public wrapper flattens. Outputs are allocated contiguous.


@_opdef.custom_op("rms_norm_fwd")
def rms_norm_fwd(x: torch.Tensor, w: Optional[torch.Tensor], eps: float, offset: float,
                 casting_mode: int, in_place: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Returns (Y, RSTD). ``in_place`` is only recorded for the backward (dX written over dY)."""
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    rstd = torch.empty((x.shape[0],), dtype=torch.float32, device=x.device)
    if x.numel() > 0:
        _backend.call("rms_norm_fwd", X=x, W=w, Y=y, RSTD=rstd, eps=eps, offset=offset, casting_mode=casting_mode)
    return y, rstd


@rms_norm_fwd.register_fake
def _(x, w, eps, offset, casting_mode, in_place):
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    rstd = x.new_empty((x.shape[0],), dtype=torch.float32)
    return y, rstd


def _dw_buffer(x: torch.Tensor, w: Optional[torch.Tensor], compute_dw: bool) -> Optional[torch.Tensor]:
    return _rows.param_grad_buffer(x, w, compute_dw)


@_opdef.custom_op("rms_norm_bwd")
def rms_norm_bwd(dy: torch.Tensor, x: torch.Tensor, w: Optional[torch.Tensor], rstd: torch.Tensor,
                 offset: float, casting_mode: int, compute_dw: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Returns (dX, dW); dW is an empty tensor when there is no weight or it needs no gradient."""
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    dw = _dw_buffer(x, w, compute_dw)
    if x.numel() > 0:
        _backend.call("rms_norm_bwd", dY=dy, X=x, W=w, RSTD=rstd, dX=dx, dW=dw, offset=offset,
                      casting_mode=casting_mode)
    return dx, (dw if dw is not None else x.new_empty((0,)))


@rms_norm_bwd.register_fake
def _(dy, x, w, rstd, offset, casting_mode, compute_dw):
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    if w is not None and compute_dw:
        return dx, torch.empty_like(w)
    return dx, x.new_empty((0,))


@_opdef.custom_op("rms_norm_bwd_inplace", mutates_args=("dy",))
def rms_norm_bwd_inplace(dy: torch.Tensor, x: torch.Tensor, w: Optional[torch.Tensor],
                         rstd: torch.Tensor, offset: float, casting_mode: int,
                         compute_dw: bool) -> torch.Tensor:
    """Writes dX over dY (Liger's in_place=True: saves one activation-sized buffer); returns dW
    (an empty tensor when there is no weight or it needs no gradient)."""
    dw = _dw_buffer(x, w, compute_dw)
    if x.numel() > 0:
        _backend.call("rms_norm_bwd", dY=dy, X=x, W=w, RSTD=rstd, dX=dy, dW=dw, offset=offset,
                      casting_mode=casting_mode)
    return dw if dw is not None else x.new_empty((0,))


@rms_norm_bwd_inplace.register_fake
def _(dy, x, w, rstd, offset, casting_mode, compute_dw):
    if w is not None and compute_dw:
        return torch.empty_like(w)
    return x.new_empty((0,))


def _setup_context(ctx, inputs, output):
    x, w, eps, offset, casting_mode, in_place = inputs
    _, rstd = output
    ctx.save_for_backward(x, w, rstd)
    ctx.offset = offset
    ctx.casting_mode = casting_mode
    ctx.in_place = in_place
    ctx.has_w = w is not None


def _backward(ctx, dy, _drstd):
    x, w, rstd = ctx.saved_tensors
    compute_dw = bool(ctx.has_w and ctx.needs_input_grad[1])
    dy = dy.contiguous()
    if ctx.in_place:
        dw = rms_norm_bwd_inplace(dy, x, w, rstd, ctx.offset, ctx.casting_mode,
                                                   compute_dw)
        dx = dy
    else:
        dx, dw = rms_norm_bwd(dy, x, w, rstd, ctx.offset, ctx.casting_mode,
                                               compute_dw)
    return dx, (dw if compute_dw else None), None, None, None, None


rms_norm_fwd.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# Public entry point (what ligerd.transformers calls).


def rms_norm(X: torch.Tensor, W: Optional[torch.Tensor], eps: float = 1e-6, offset: float = 0.0,
             casting_mode="llama", in_place: bool = True) -> torch.Tensor:
    """RMSNorm over the last dimension of a 1-D to 4-D CUDA tensor, differentiable in X and W.
    X may be a DTensor with whole rows and W a replicated one (ligerd.ops._dtensor)."""
    if _dtensor.any_dtensor(X, W):  # each rank's local rows; not in place (dY is DTensor-owned)
        return _dtensor.rowwise(OP, rms_norm, X, [W], eps, offset, casting_mode, False)
    check_inputs(X, W)
    mode = casting_mode_id(casting_mode)
    # Under torch.compile the backward is traced by AOTAutograd, which does not allow a backward
    # graph to mutate its inputs (dY); the compiler plans buffer reuse itself there, so in_place
    # only applies in eager mode (ligerd.ops._opdef.eager(): not compiling, no tracer). The
    # decision is made with the forward and travels to the backward in the op's arguments.
    in_place = bool(in_place) and _opdef.eager()
    shape = X.shape
    x2 = _as_rows(X)
    y2, _ = rms_norm_fwd(x2, W, float(eps), float(offset), mode, in_place)
    return y2.view(shape)
