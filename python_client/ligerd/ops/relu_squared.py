"""Squared ReLU as torch custom ops: ``ligerd::relu_squared_fwd`` and ``ligerd::relu_squared_bwd``,
with fake (meta) kernels and autograd, so eager mode, ``torch.compile(fullgraph=True)`` and
FSDP/DDP all see ordinary tensors.

    y  = relu(x)^2            (fp32 math, rounded once to x's dtype)
    dx = 2 * relu(x) * dy     (the backward needs only x)

The executor ops (kernels/ops/relu_squared.cc) take:
- relu_squared_fwd: tensors [X, Y out], no scalars
- relu_squared_bwd: tensors [dY, X, dX out (may be dY)], no scalars

As Liger-Kernel's LigerReLUSquaredFunction (0.8.5) does, the forward saves x and both directions
write fresh outputs: the incoming gradient may be shared with other branches of the graph, so
writing dX over it is not safe without the caller's say-so (the executor's in-place form is there
for callers that own dY).
"""

from __future__ import annotations

import torch

from ligerd import _backend
from ligerd.ops import _opdef, _rows

OP = "relu_squared"


def check_inputs(X) -> None:
    """Friendly checks before anything reaches C++ (which checks again): a CUDA float tensor (fp32,
    bf16, fp16). Any shape: the op is element-wise, and the wrapper hands the executor a
    (rows, last dim) view."""
    _rows.check_float_tensor(OP, "X", X)


# The kernels read rows at any pitch; see ligerd.ops._rows.as_rows.
_as_rows = _rows.as_rows


# ---------------------------------------------------------------------------------------------
# Custom ops on 2-D (rows, n) tensors with a contiguous last dim (rows at any pitch); the public
# wrapper flattens. Outputs are allocated contiguous.


@_opdef.custom_op("relu_squared_fwd")
def relu_squared_fwd(x: torch.Tensor) -> torch.Tensor:
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    if x.numel() > 0:
        _backend.call("relu_squared_fwd", X=x, Y=y)
    return y


@relu_squared_fwd.register_fake
def _(x):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@_opdef.custom_op("relu_squared_bwd")
def relu_squared_bwd(dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dX from the forward's input X and the incoming gradient dY (both (rows, n))."""
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    if x.numel() > 0:
        _backend.call("relu_squared_bwd", dY=dy, X=x, dX=dx)
    return dx


@relu_squared_bwd.register_fake
def _(dy, x):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    (x,) = inputs
    ctx.save_for_backward(x)


def _backward(ctx, dy):
    (x,) = ctx.saved_tensors
    # dY can arrive at any layout (an expanded ones from .sum(), a transposed view): rows at one
    # pitch are read in place, anything else is copied.
    return relu_squared_bwd(_as_rows(dy), x)


relu_squared_fwd.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# Public entry point (what ligerd.transformers calls).


def relu_squared(X: torch.Tensor) -> torch.Tensor:
    """relu(X)^2 of a CUDA tensor of any shape (fp32, bf16 or fp16), differentiable; the result
    has X's shape and dtype (contiguous)."""
    check_inputs(X)
    shape = X.shape
    if X.numel() == 0:  # nothing to compute (and no (-1, 0) view of some shapes); keeps autograd
        return torch.relu(X).square()
    x2 = _as_rows(X.reshape(1) if X.dim() == 0 else X)
    return relu_squared_fwd(x2).view(shape)
