"""The RoPE kernels as torch custom ops (``ligerd::rope_inplace``, ``ligerd::rope``), their input
checks and the in-place autograd Function: what ligerd.ops.rope (full RoPE) and
ligerd.ops.rope_partial (partial rotary) both build on. ligerd.ops.rope's docstring says what the
ops compute and when they run in place."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ligerd import _backend
from ligerd._errors import OpInputError
from ligerd.ops import _opdef

OP = "rope"
_SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _fail(msg: str):
    raise OpInputError(f"ligerd op {OP}: {msg}", op=OP)


def _cos_sin_3d(t: torch.Tensor, name: str, batch: int, seq: int, hd: int) -> torch.Tensor:
    """cos/sin as [1 or batch, seq, hd]: HF passes [bsz, seq, hd]; [seq, hd] and an already
    unsqueezed [bsz, 1, seq, hd] are accepted too (views, no copy)."""
    if t.dim() == 2:
        t = t.unsqueeze(0)
    elif t.dim() == 4 and t.shape[1] == 1:
        t = t.squeeze(1)
    if t.dim() != 3 or t.shape[0] not in (1, batch) or t.shape[1] != seq or t.shape[2] != hd:
        _fail(f"{name} must have shape (1 or {batch}, {seq}, {hd}) (batch, seq, head_dim of q), "
              f"got {tuple(t.shape)}")
    return t


def check_inputs(q, k, cos, sin) -> Tuple[torch.Tensor, torch.Tensor]:
    """Friendly checks before anything reaches C++ (which checks again). Returns cos and sin as
    3-D views."""
    for name, t in (("q", q), ("k", k), ("cos", cos), ("sin", sin)):
        if not isinstance(t, torch.Tensor):
            _fail(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_cuda and not _backend.cpu_allowed():
            _fail(f"{name} must be a CUDA tensor, got a tensor on {t.device}")
        if t.dtype not in _SUPPORTED_DTYPES:
            _fail(f"{name} has dtype {t.dtype}; supported: float32, bfloat16, float16")
    if q.dim() != 4:
        _fail(f"q must be (bsz, n_q_head, seq, head_dim), got shape {tuple(q.shape)}")
    if k.dim() != 4:
        _fail(f"k must be (bsz, n_kv_head, seq, head_dim), got shape {tuple(k.shape)}")
    b, _, s, d = q.shape
    if k.shape[0] != b or k.shape[2] != s or k.shape[3] != d:
        _fail(f"k has shape {tuple(k.shape)}; expected ({b}, n_kv_head, {s}, {d}) to match q "
              f"{tuple(q.shape)}")
    if d == 0 or d % 2:
        _fail(f"head_dim must be even and > 0, got {d}")
    if k.dtype != q.dtype:
        _fail(f"mixed dtypes: q is {q.dtype} but k is {k.dtype}")
    if cos.dtype != sin.dtype:
        _fail(f"mixed dtypes: cos is {cos.dtype} but sin is {sin.dtype}")
    if cos.dtype != q.dtype and cos.dtype != torch.float32:
        _fail(f"cos/sin have dtype {cos.dtype}; expected q's dtype {q.dtype} or torch.float32")
    dev = q.get_device()
    for name, t in (("k", k), ("cos", cos), ("sin", sin)):
        if t.get_device() != dev or (dev < 0 and t.device != q.device):
            _fail(f"{name} is on {t.device} but q is on {q.device}")
    cos3 = _cos_sin_3d(cos, "cos", b, s, d)
    sin3 = _cos_sin_3d(sin, "sin", b, s, d)
    if cos3.shape != sin3.shape:
        _fail(f"cos and sin must have the same shape, got {tuple(cos.shape)} and {tuple(sin.shape)}")
    return cos3, sin3


# ---------------------------------------------------------------------------------------------
# Memory-layout predicates (mirroring the executor's checks, so a refused in-place call falls
# back to out-of-place here instead of raising there).


def _last_dim_ok(t: torch.Tensor) -> bool:
    return t.shape[-1] <= 1 or t.stride(-1) == 1


def _no_internal_overlap(t: torch.Tensor) -> bool:
    dims = sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz != 1)
    if any(sz == 0 for sz in t.shape):
        return True
    span = 0
    for st, sz in dims:
        if st <= span:
            return False
        span += st * (sz - 1)
    return True


def _byte_range(t: torch.Tensor) -> Tuple[int, int]:
    if t.numel() == 0:
        return (0, 0)
    last = sum((sz - 1) * st for sz, st in zip(t.shape, t.stride()))
    start = t.data_ptr()
    return start, start + (last + 1) * t.element_size()


def _disjoint(*ts: torch.Tensor) -> bool:
    rs = [_byte_range(t) for t in ts]
    for i in range(len(rs)):
        for j in range(i + 1, len(rs)):
            (a0, a1), (b0, b1) = rs[i], rs[j]
            if a0 < a1 and b0 < b1 and a0 < b1 and b0 < a1:
                return False
    return True


def _writable_in_place(a: torch.Tensor, b: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> bool:
    return (_last_dim_ok(a) and _last_dim_ok(b) and _no_internal_overlap(a) and
            _no_internal_overlap(b) and _disjoint(a, b, cos) and _disjoint(a, b, sin))


def _leaf_requiring_grad(t: torch.Tensor) -> bool:
    base = t._base if t._base is not None else t
    return (t.requires_grad and t.is_leaf) or (base.requires_grad and base.is_leaf)


def _contig_last(t: torch.Tensor) -> torch.Tensor:
    return t if _last_dim_ok(t) else t.contiguous()


def _heads_view(t: Optional[torch.Tensor], other: torch.Tensor) -> torch.Tensor:
    """A missing gradient (None) becomes a 0-head slice of the other one: the kernel skips it."""
    return other[:, :0] if t is None else t


# ---------------------------------------------------------------------------------------------
# Custom ops.


def _launch(backward, q, k, cos, sin, qo, ko):
    if backward:
        _backend.call("rope_bwd", dQ=q, dK=k, COS=cos, SIN=sin, dQ_out=qo, dK_out=ko)
    else:
        _backend.call("rope_fwd", Q=q, K=k, COS=cos, SIN=sin, Q_out=qo, K_out=ko)


@_opdef.custom_op("rope_inplace", mutates_args=("q", "k"))
def rope_inplace(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 backward: bool) -> None:
    """Rotates q and k in place (by -theta, the transpose, when ``backward``)."""
    if q.numel() + k.numel() > 0:
        _launch(backward, q, k, cos, sin, q, k)


@rope_inplace.register_fake
def _(q, k, cos, sin, backward):
    return None


def _like(t: torch.Tensor) -> torch.Tensor:
    # Same strides as t where t is dense (HF's transposed layout stays that layout), else
    # contiguous.
    return torch.empty_like(t)


@_opdef.custom_op("rope")
def rope_out(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
             backward: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Returns the rotated (q, k) in fresh tensors; q and k are only read."""
    qo, ko = _like(q), _like(k)
    if q.numel() + k.numel() > 0:
        _launch(backward, q, k, cos, sin, qo, ko)
    return qo, ko


@rope_out.register_fake
def _(q, k, cos, sin, backward):
    return _like(q), _like(k)


def _grads(dq, dk, cos, sin, in_place: bool):
    """(dq, dk) rotated back; None stays None. In place on dq/dk where legal and allowed."""
    if dq is None and dk is None:
        return None, None
    dq = None if dq is None else _contig_last(dq)
    dk = None if dk is None else _contig_last(dk)
    gq, gk = _heads_view(dq, dk), _heads_view(dk, dq)
    if in_place and _writable_in_place(gq, gk, cos, sin):
        rope_inplace(gq, gk, cos, sin, True)
        rq, rk = gq, gk
    else:
        rq, rk = rope_out(gq, gk, cos, sin, True)
    return (None if dq is None else rq), (None if dk is None else rk)


def _setup_context(ctx, inputs, output):
    _, _, cos, sin, backward = inputs
    ctx.save_for_backward(cos, sin)
    ctx.set_materialize_grads(False)


def _backward(ctx, dq, dk):
    cos, sin = ctx.saved_tensors
    # Traced by AOTAutograd (compile) or called for an out-of-place forward: fresh outputs (a
    # compiled backward must not mutate its graph's inputs; the compiler reuses buffers itself).
    dq2, dk2 = _grads(dq, dk, cos, sin, in_place=False)
    return dq2, dk2, None, None, None


rope_out.register_autograd(_backward, setup_context=_setup_context)


class _RopeInPlace(torch.autograd.Function):
    """Eager, differentiable, in place: forward rotates q and k where they lie (Liger's memory
    behaviour), backward rotates dq and dk where they lie."""

    @staticmethod
    def forward(ctx, q, k, cos, sin):
        rope_inplace(q, k, cos, sin, False)
        ctx.save_for_backward(cos, sin)
        ctx.set_materialize_grads(False)
        return q, k

    @staticmethod
    def backward(ctx, dq, dk):
        cos, sin = ctx.saved_tensors
        dq2, dk2 = _grads(dq, dk, cos, sin, in_place=True)
        return dq2, dk2, None, None
