"""The fused linear cross-entropy's sliced sweep: the low-memory path, where no [tokens, V] logits
block is ever held, only a [T, S] slice of it.

The tokens are taken in blocks of T; per block, two passes over the vocabulary in slices of S
classes (kernels/ops/ce_slice.cuh, semantics in ligerd/testing/reference/ce_slice.py):

    pass 1, each slice:  z = x_b @ W_s.T (+ b_s)            ligerd gemm into the [T, S] buffer
                         ce_slice_stats                      running max, sum of exp, target's z,
                                                             sum of w z, argmax, per token
    finalize (torch, [T] vectors): lse, the loss rows and the gradient's per-row coefficients
    pass 2, each slice, in reverse order (the last slice of pass 1 is still in the buffer: its
    GEMM is not repeated):
                         z = x_b @ W_s.T (+ b_s)            recomputed
                         ce_slice_grad                       d logits over z, in place
                         dx_b  += dz @ W_s                   fp32 accumulator (x's own rows for fp32)
                         dW_s  (+)= dz.T @ x_b               written once per token block
                         db_s  += dz.sum(0)

Cost against the chunked sweep (fused_linear_cross_entropy._chunked): one more GEMM of the logits'
size (the recomputation), but dW is read and written once per token block instead of once per
token chunk; memory: the [T, S] buffer and the [T, H] fp32 accumulator instead of a [C, V] buffer.
At 8192 x 4096 x 128256 bf16 with T = 1024, S = 16384: 32 + 16 MiB
(docs/perf/fused_linear_cross_entropy.md has the measured trade-off). Same returns and options as
_chunked.
"""

from __future__ import annotations

import os

import torch

from ligerd import _backend
from ligerd._errors import OpInputError
from ligerd.ops import cross_entropy as ce
from ligerd.ops._flce_rows import SweepRows, grad_buffers
from ligerd.ops.gemm import gemm_

OP = "fused_linear_cross_entropy"
_ALIGN = 128           # token-block rows: GEMM tiles
# S: wide slices mean fewer, larger GEMMs and kernel launches; within the budget T shrinks as S
# grows (docs/perf/fused_linear_cross_entropy.md: at 8192 x 4096 x 128256, 1024 x 16384 was the
# fastest shape within it)
_SLICE_CLASSES = 16384
# T from: the buffer, the fp32 dx accumulator and the per-token vectors within 56 MiB, which with
# cuBLASLt's 4 MiB workspace stays under Liger-Kernel's 63 MiB at 8192 x 4096 x 128256 bf16.
_BUDGET_BYTES = 56 << 20


def _fail(msg: str):
    raise OpInputError(f"ligerd op {OP}: {msg}", op=OP)


def block_shape(bt: int, V: int, H: int, elem_bytes: int, fp32_dx: bool) -> tuple:
    """(T tokens per block, S classes per slice); LIGERD_FLCE_SLICE="T,S" overrides them."""
    env = os.environ.get("LIGERD_FLCE_SLICE", "").strip()
    if env:
        try:
            T, S = (int(v) for v in env.split(","))
        except ValueError:
            T = S = 0
        if T < 1 or S < 1:
            _fail(f"LIGERD_FLCE_SLICE must be 'T,S' (two positive integers: tokens, classes), got {env!r}")
        return max(min(T, bt), 1), max(min(S, V), 1)
    S = max(min(_SLICE_CLASSES, V), 1)
    per_token = S * elem_bytes + (0 if fp32_dx else H * 4) + 48
    most = max(_BUDGET_BYTES // per_token // _ALIGN * _ALIGN, _ALIGN)
    blocks = -(-bt // most)  # then equal blocks: 8192 tokens in 8 of 1024, not 7 of 1152 and 128
    T = -(-bt // max(blocks, 1) // _ALIGN) * _ALIGN if bt > most else bt
    return max(min(T, bt), 1), S


def slice_stats_(z, target, weight, stats, idx, v0: int, first: bool, softcap: float) -> None:
    _backend.call("ce_slice_stats", X=z, target=target, weight=weight, stats=stats, idx=idx, v0=v0,
                  first=1 if first else 0, softcap=softcap)


def slice_grad_(z, target, weight, coef, v0: int, softcap: float, ignore_index: int) -> None:
    _backend.call("ce_slice_grad", X=z, target=target, weight=weight, coef=coef, dX=z, v0=v0,
                  softcap=softcap, ignore_index=ignore_index)


def _finalize(stats, idx, target, w32, denom, args, V, row_scale, token_scaling):
    """(loss rows, z rows, pred or None, coef [T, 4]) of one token block from its statistics: the
    cross-entropy kernel's per-row formulas (kernels/ops/cross_entropy.cuh's header), in fp32."""
    ii, lss, ls, red, _ = args
    m, s, sz, zy = stats.unbind(1)
    lse = m + torch.log(s)
    ignored = target == ii
    valid = ~ignored & (target >= 0) & (target < V)
    if w32 is not None:
        wy = w32[target.clamp(0, V - 1)]
        W = denom[2]
    else:
        wy = torch.ones_like(lse)
        W = float(V)
    eps = ls / V
    if red == ce.REDUCTIONS["mean"]:
        n, sw = denom[0], denom[1]
    else:
        n = sw = 1.0
    loss = wy * (lse - zy)
    if ls > 0:
        loss = loss * (1 - ls) + eps * (W * lse - sz)
    zl = lss * lse * lse / n
    loss = loss / sw
    A = ((1 - ls) * wy + eps * W) / sw + 2 * lss * lse / n
    B = torch.zeros_like(lse) - eps / sw
    C = -(1 - ls) * wy / sw
    f = row_scale if row_scale is not None else torch.ones_like(lse)
    if token_scaling:
        py = torch.exp(zy - lse)
        loss, zl, f = loss * py, zl * py, f * py
    coef = torch.stack([lse, A * f, B * f, C * f], dim=1)
    # A target outside [0, V) that is not ignore_index: NaN loss and gradient, as cross_entropy_fwd.
    coef = torch.where((valid | ignored)[:, None], coef, torch.full_like(coef, float("nan"))).contiguous()
    zero = torch.zeros_like(loss)
    loss = torch.where(ignored, zero, torch.where(valid, loss + zl, torch.full_like(loss, float("nan"))))
    zl = torch.where(ignored, zero, zl)
    pred = torch.where(ignored, torch.full_like(idx, -1), idx) if idx is not None else None
    return loss, zl, pred, coef


def sliced(x, W, target, b, w32, denom, args, want_z, want_pred, *, grads: bool, need_dx: bool,
           need_dw: bool, need_db: bool, accum_dtype, row_scale=None, token_scaling=False,
           after_first_chunk=None):
    """One sliced sweep (the module docstring). Returns (loss_rows, z_rows, pred, dx, dW, db), as
    fused_linear_cross_entropy._chunked. ``row_scale`` (fp32 [BT]) multiplies each row's gradient
    (reduction="none"'s backward, fp16's mean scale)."""
    bt, H = x.shape
    V = W.shape[0]
    dev = x.device
    softcap, ii = args[4], args[0]
    target = target.contiguous()  # the ce_slice kernels read target[r] (no stride)
    fp32_dx = x.dtype == torch.float32
    T, S = block_shape(bt, V, H, x.element_size(), fp32_dx)
    out = SweepRows(bt, dev, want_z, want_pred)
    dx, dW, db = grad_buffers(x, W, grads, need_dx, need_dw, need_db, accum_dtype)
    rows = min(T, bt)
    buf = torch.empty((rows, S), dtype=x.dtype, device=dev)
    stats = torch.empty((rows, 4), dtype=torch.float32, device=dev)
    idx = torch.empty(rows, dtype=torch.int64, device=dev) if want_pred else None
    dx_acc = torch.empty((rows, H), dtype=torch.float32, device=dev) if dx is not None and not fp32_dx else None
    slices = [(v0, min(v0 + S, V)) for v0 in range(0, V, S)]

    def logits(xb, v0, v1, m):
        z = buf[:m, : v1 - v0]
        gemm_(z, xb, W[v0:v1].t(), bias=b[v0:v1] if b is not None else None)
        return z

    for t0 in range(0, bt, T):
        t1 = min(t0 + T, bt)
        m = t1 - t0
        xb, tb = x[t0:t1], target[t0:t1]
        st = stats[:m]
        ib = idx[:m] if idx is not None else None
        for v0, v1 in slices:
            slice_stats_(logits(xb, v0, v1, m), tb, w32, st, ib, v0, v0 == 0, softcap)
        rs = row_scale[t0:t1] if row_scale is not None else None
        lr, zr, pr, coef = _finalize(st, ib, tb, w32, denom, args, V, rs, token_scaling)
        out.put(t0, t1, lr, zr, pr)
        if t0 == 0 and after_first_chunk is not None:
            after_first_chunk()  # raises on a bad target before any gradient GEMM is queued
        if not grads:
            continue
        dxb = (dx_acc[:m] if dx_acc is not None else dx[t0:t1]) if dx is not None else None
        for k, (v0, v1) in enumerate(reversed(slices)):
            z = buf[:m, : v1 - v0] if k == 0 else logits(xb, v0, v1, m)  # pass 1's last slice
            slice_grad_(z, tb, w32, coef, v0, softcap, ii)
            if dxb is not None:
                gemm_(dxb, z, W[v0:v1], accumulate=k > 0)
            if dW is not None:
                gemm_(dW[v0:v1], z.t(), xb, accumulate=t0 > 0)
            if db is not None:
                db[v0:v1] += z.sum(dim=0, dtype=db.dtype)
        if dx_acc is not None:
            dx[t0:t1].copy_(dx_acc[:m])
    if bt == 0 and after_first_chunk is not None:
        after_first_chunk()
    return out.loss, out.z, out.pred, dx, dW, db
