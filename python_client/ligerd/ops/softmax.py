"""Softmax over the last dimension as torch custom ops: ``ligerd::softmax_fwd`` and
``ligerd::softmax_bwd``, with fake (meta) kernels and autograd, so eager mode,
``torch.compile(fullgraph=True)`` and FSDP/DDP all see ordinary tensors.

    y = exp(x - max(x)) / sum(exp(x - max(x)))        (per row, in fp32, rounded once)
    dx = y * (dy - sum(dy * y))                       (the backward needs only y)

The executor ops (kernels/ops/softmax.cc) take:
- softmax_fwd: tensors [X, Y out], no scalars
- softmax_bwd: tensors [dY, Y, dX out (may be dY)], no scalars

The backward writes a fresh dX, as Liger-Kernel's LigerSoftmaxFunction (0.8.5) does: the incoming
gradient may be shared with other branches of the graph (an add hands the same tensor to both
inputs), so writing over it is not safe without a caller's say-so, and Liger's API has none. The
executor's in-place form is there for callers that own dY.
"""

from __future__ import annotations

import torch

from ligerd import _backend
from ligerd.ops import _opdef, _rows

OP = "softmax"


def check_inputs(X) -> None:
    """Friendly checks before anything reaches C++ (which checks again, as a second line); run on
    every call (see ligerd.ops._rows)."""
    _rows.check_rows(OP, "X", X)


# The kernels read rows at any pitch; see ligerd.ops._rows.as_rows.
_as_rows = _rows.as_rows


# ---------------------------------------------------------------------------------------------
# Custom ops. They take 2-D (rows, n) tensors with a contiguous last dim (rows at any pitch); the
# public wrapper flattens. Outputs are allocated contiguous.


@_opdef.custom_op("softmax_fwd")
def softmax_fwd(x: torch.Tensor) -> torch.Tensor:
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    if x.numel() > 0:
        _backend.call("softmax_fwd", X=x, Y=y)
    return y


@softmax_fwd.register_fake
def _(x):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@_opdef.custom_op("softmax_bwd")
def softmax_bwd(dy: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dX from the forward's output Y and the incoming gradient dY (both (rows, n))."""
    dx = torch.empty_like(y, memory_format=torch.contiguous_format)
    if y.numel() > 0:
        _backend.call("softmax_bwd", dY=dy, Y=y, dX=dx)
    return dx


@softmax_bwd.register_fake
def _(dy, y):
    return torch.empty_like(y, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output)


def _backward(ctx, dy):
    (y,) = ctx.saved_tensors
    # dY can arrive at any layout (an expanded ones from .sum(), a transposed view): rows at one
    # pitch are read in place, anything else is copied.
    return softmax_bwd(_as_rows(dy), y)


softmax_fwd.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# Public entry point (what ligerd.transformers calls).


def softmax(X: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension of a 1-D to 4-D CUDA tensor (fp32, bf16 or fp16),
    differentiable; the result has X's shape and dtype."""
    check_inputs(X)
    shape = X.shape
    y2 = softmax_fwd(_as_rows(X))
    return y2.view(shape)
