"""SwiGLU and GeGLU as torch custom ops: ``ligerd::glu_fwd``, ``ligerd::glu_bwd`` and
``ligerd::glu_bwd_inplace``, with fake (meta) kernels and autograd.

    c = act(a) * b,   act = silu (SwiGLU) or tanh-approximation GELU (GeGLU)

As in Liger-Kernel (LigerSiLUMulFunction / LigerGELUMulFunction) only a and b are saved; the
backward recomputes act(a) and, in eager mode, writes da over a and db over b (no new buffers).
So after ``backward()`` the tensors passed as a and b hold their gradients: do not reuse them.
Under torch.compile, and when a and b are strided views (e.g. the two halves of one [rows, 2F]
tensor) or share memory, the backward writes fresh da and db instead (still one pass).

Executor ops (kernels/ops/glu.cc), no scalars:
- swiglu_fwd / geglu_fwd: tensors [A, B, C out]
- swiglu_bwd / geglu_bwd: tensors [dC, A, B, dA out (may be A), dB out (may be B)]
"""

from __future__ import annotations

from typing import Tuple

import torch

from ligerd import _backend
from ligerd._errors import OpInputError
from ligerd.ops import _dtensor, _opdef
from ligerd.ops.rms_norm import _as_rows

SILU, GELU_TANH = 0, 1
OPS = {SILU: "swiglu", GELU_TANH: "geglu"}
_FWD = {k: v + "_fwd" for k, v in OPS.items()}  # executor op names, built once
_BWD = {k: v + "_bwd" for k, v in OPS.items()}
_SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MAX_DIMS = 4


def _fail(act: int, msg: str):
    op = OPS[act]
    raise OpInputError(f"ligerd op {op}: {msg}", op=op)


def check_inputs(a, b, act: int) -> None:
    """Friendly checks before anything reaches C++ (which checks again)."""
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor):
            _fail(act, f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_cuda and not _backend.cpu_allowed():
            _fail(act, f"{name} must be a CUDA tensor, got a tensor on {t.device}")
        if t.dtype not in _SUPPORTED_DTYPES:
            _fail(act, f"{name} has dtype {t.dtype}; supported: float32, bfloat16, float16")
        if t.dim() < 1 or t.dim() > _MAX_DIMS:
            _fail(act, f"{name} must have 1 to {_MAX_DIMS} dimensions, got shape {tuple(t.shape)}")
    if a.shape != b.shape:
        _fail(act, f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype:
        _fail(act, f"mixed dtypes: a is {a.dtype} but b is {b.dtype}")
    a_dev = a.get_device()
    if a_dev != b.get_device() or (a_dev < 0 and a.device != b.device):
        _fail(act, f"b is on {b.device} but a is on {a.device}")


def _disjoint_dense(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when a and b are each contiguous and share no memory: then dA over A and dB over B
    is exactly what the executor allows (an output may only be exactly its declared alias)."""
    if not (a.is_contiguous() and b.is_contiguous()):
        return False
    a0, b0 = a.data_ptr(), b.data_ptr()
    a1 = a0 + a.numel() * a.element_size()
    b1 = b0 + b.numel() * b.element_size()
    return a1 <= b0 or b1 <= a0


# ---------------------------------------------------------------------------------------------
# Custom ops on 2-D (rows, F) tensors with a contiguous last dim (rows at any pitch).


@_opdef.custom_op("glu_fwd")
def glu_fwd(a: torch.Tensor, b: torch.Tensor, act: int, in_place: bool) -> torch.Tensor:
    """Returns C. ``in_place`` is only recorded for the backward (dA, dB written over A, B)."""
    c = torch.empty(a.shape, dtype=a.dtype, device=a.device)
    if a.numel() > 0:
        _backend.call(_FWD[act], A=a, B=b, C=c)
    return c


@glu_fwd.register_fake
def _(a, b, act, in_place):
    return a.new_empty(a.shape)


@_opdef.custom_op("glu_bwd")
def glu_bwd(dc: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
            act: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Returns fresh (dA, dB)."""
    da = torch.empty(a.shape, dtype=a.dtype, device=a.device)
    db = torch.empty(b.shape, dtype=b.dtype, device=b.device)
    if a.numel() > 0:
        _backend.call(_BWD[act], dC=dc, A=a, B=b, dA=da, dB=db)
    return da, db


@glu_bwd.register_fake
def _(dc, a, b, act):
    return a.new_empty(a.shape), b.new_empty(b.shape)


@_opdef.custom_op("glu_bwd_inplace", mutates_args=("a", "b"))
def glu_bwd_inplace(dc: torch.Tensor, a: torch.Tensor, b: torch.Tensor, act: int) -> None:
    """Writes dA over A and dB over B (Liger's memory trick: the saved inputs become the grads)."""
    if a.numel() > 0:
        _backend.call(_BWD[act], dC=dc, A=a, B=b, dA=a, dB=b)


@glu_bwd_inplace.register_fake
def _(dc, a, b, act):
    return None


def _setup_context(ctx, inputs, output):
    a, b, act, in_place = inputs
    ctx.save_for_backward(a, b)
    ctx.act = act
    ctx.in_place = in_place


def _backward(ctx, dc):
    a, b = ctx.saved_tensors
    dc = _as_rows(dc)  # e.g. an expanded (stride 0) gradient is made contiguous
    if ctx.in_place:
        glu_bwd_inplace(dc, a, b, ctx.act)
        return a, b, None, None
    da, db = glu_bwd(dc, a, b, ctx.act)
    return da, db, None, None


glu_fwd.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# Public entry points (what ligerd.transformers calls).


def glu(a: torch.Tensor, b: torch.Tensor, act: int) -> torch.Tensor:
    """act(a) * b over 1-D to 4-D CUDA tensors of one shape, differentiable in a and b. a and b may
    be DTensors placed alike (ligerd.ops._dtensor)."""
    if _dtensor.any_dtensor(a, b):  # each rank's local elements
        return _dtensor.elementwise(OPS.get(act, "glu"), glu, a, b, act)
    check_inputs(a, b, act)
    shape = a.shape
    if a.numel() == 0:  # nothing to compute (and no (-1, 0) view exists); keeps autograd
        return a * b
    a2 = _as_rows(a)
    b2 = _as_rows(b)
    # In place only in eager mode (AOTAutograd does not let a backward graph mutate saved
    # inputs; the compiler plans buffers itself there), and only where dA over A, dB over B is
    # legal for the executor. Decided while the forward is traced; travels in the op's args.
    in_place = _opdef.eager() and _disjoint_dense(a2, b2)
    c2 = glu_fwd(a2, b2, act, in_place)
    return c2.view(shape)


def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """silu(a) * b."""
    return glu(a, b, SILU)


def geglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """gelu(a, approximate="tanh") * b."""
    return glu(a, b, GELU_TANH)
