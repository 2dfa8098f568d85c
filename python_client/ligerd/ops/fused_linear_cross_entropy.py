"""Fused linear + cross-entropy (Liger's LigerFusedLinearCrossEntropyFunction) without the full
logits: the tokens are processed in chunks; per chunk

    logits  = x_c @ W.T (+ b)             ligerd gemm, the bias in cuBLASLt's epilogue
    ligerd cross_entropy_fwd in place     loss rows, and d logits written over the logits chunk
    dx[c]   = dlogits @ W                 ligerd gemm straight into the rows of grad_input
    dW     += dlogits.T @ x_c             ligerd gemm, beta = 1 (the first chunk writes, no zero fill)
    db     += dlogits.sum(0)              torch (an LM head bias is rare)

The GEMMs are the daemon's (kernels/ops/gemm.cc: cuBLASLt, fp32 accumulation), dispatched like
every other op: in ligerd for a remote session, in this process's executor for a local one; the
transposes are views, never copies. Every gradient is computed in the
forward (as Liger), so the backward only multiplies the three gradients by grad_output, in place,
and skips even that when it is exactly 1.0 (decided on the device: no host sync).
reduction="none" is different (Liger issue #968): the upstream gradient is one value per token and
must be folded into d logits before the token sum of dW, so the forward computes only the losses
(one read of each logits chunk) and the backward recomputes each chunk's logits with the per-token
factor applied inside the cross-entropy kernel.

Memory: beyond the inputs and their gradients, one [chunk, V] logits buffer (reused by every
chunk), the per-token losses and cuBLASLt's workspace (4 MiB, kernels/blas/lt_gemm.h). The chunk
is the largest multiple of 128 tokens (GEMM tiles) whose buffer stays within 9.5% of the full
logits (8192 x 128256 bf16: 768 tokens, 188 MiB against 2004 MiB; with the workspace 9.6%): the
dW GEMM reads and writes all of dW once per chunk with only `chunk` as its inner dimension, so
fewer, larger chunks are faster (docs/perf/fused_linear_cross_entropy.md), and 9.5% leaves the
workspace and per-token vectors room under the 10% budget. ``LIGERD_FLCE_CHUNK``
overrides it (tokens).

The sliced sweep (``LIGERD_FLCE_MODE=sliced``; ligerd/ops/_flce_sliced.py) holds less: blocks of
tokens whose logits are computed one slice of classes at a time, twice (statistics, then
gradients), never a [chunk, V] buffer: one more GEMM, and dW read and written once per block
instead of once per chunk. docs/perf/fused_linear_cross_entropy.md measures both.

``accum_dtype`` (e.g. torch.float32) accumulates dW and db in that dtype and casts back at the end
(as Liger); the default accumulates in the weight's dtype.

Eager mode runs the chunk loop through ``_FusedLinearCrossEntropy`` (a plain autograd.Function:
the backward scales the saved gradients in place). Under torch.compile (fullgraph), make_fx or
torch.export the same loop is one opaque custom op, ``ligerd::fused_linear_cross_entropy_fwd``,
with a fake kernel and an autograd formula (``ligerd::fused_linear_cross_entropy_bwd`` for
reduction="none"): the tracer sees one node, never the chunks. Its backward scales the saved
gradients out of place (a traced backward may not mutate its inputs); Inductor writes that product
into the saved gradients' own memory (AOTAutograd donates saved tensors that nothing else holds),
so the compiled step keeps the eager memory footprint (aot_eager, which plans no memory, holds a
second copy of the gradients during the backward). The target check is eager-only, as for
cross-entropy: compiled or captured, an out-of-range target gives NaN instead of an error.
"""

from __future__ import annotations

import math
import os

import torch

from typing import Optional, Tuple

from ligerd import _telemetry
from ligerd._errors import OpInputError, warn_once
from ligerd.ops import _flce_sliced, _opdef
from ligerd.ops._flce_rows import SweepRows, grad_buffers
from ligerd.ops import cross_entropy as ce
from ligerd.ops.gemm import gemm_

OP = "fused_linear_cross_entropy"
_CHUNK_ALIGN = 128  # GEMM tile rows
_CHUNK_BUDGET = 0.095  # the logits buffer's share of the full logits (see the module docstring)
_CHUNK_MAX_BYTES = 512 << 20  # and never more than 512 MiB (huge BT)
_FP16_MEAN_SCALE_MAX = 4096.0  # see _chunked: keeps fp16 d logits of a mean out of subnormals


def _fail(msg: str):
    raise OpInputError(f"ligerd op {OP}: {msg}", op=OP)


def chunk_tokens(bt: int, v: int, elem_bytes: int) -> int:
    """Tokens per chunk (see the module docstring)."""
    env = os.environ.get("LIGERD_FLCE_CHUNK")
    if env:
        try:
            n = int(env)
        except ValueError:
            _fail(f"LIGERD_FLCE_CHUNK must be a positive integer, got {env!r}")
        if n < 1:
            _fail(f"LIGERD_FLCE_CHUNK must be a positive integer, got {env!r}")
        return min(n, max(bt, 1))
    c = int(bt * _CHUNK_BUDGET) // _CHUNK_ALIGN * _CHUNK_ALIGN
    by_bytes = max(_CHUNK_MAX_BYTES // max(v * elem_bytes, 1) // _CHUNK_ALIGN * _CHUNK_ALIGN, _CHUNK_ALIGN)
    c = min(max(c, _CHUNK_ALIGN), by_bytes)
    return max(min(c, bt), 1)


def sweep_mode(bt: int, V: int) -> str:
    """"chunked" or "sliced" (see the module docstring): LIGERD_FLCE_MODE, else chunked."""
    mode = os.environ.get("LIGERD_FLCE_MODE", "").strip() or "chunked"
    if mode not in ("chunked", "sliced"):
        _fail(f"LIGERD_FLCE_MODE must be 'chunked' or 'sliced', got {mode!r}")
    return mode


def _chunked(x, W, target, b, w32, denom, args, want_z, want_pred, *, grads: bool, need_dx: bool,
             need_dw: bool, need_db: bool, accum_dtype, row_scale=None, token_scaling=False,
             after_first_chunk=None):
    """One sweep over the gradients' chunks or the vocabulary's slices (sweep_mode). Returns
    (loss_rows, z_rows, pred, dx, dW, db). ``after_first_chunk`` is called once the first chunk
    is queued (the deferred target check)."""
    # fp16 and "mean": d logits = (p - onehot) / n are mostly below fp16's smallest normal
    # (p ~ 1/V, n ~ thousands) and would lose their bits; they are held multiplied by
    # s = min(n, 4096) (inside the kernel, in fp32, before rounding) and the three gradients
    # divided by s once at the end. bf16 has fp32's exponent range and needs none of this.
    fp16_scale = None
    if grads and x.dtype == torch.float16 and args[3] == ce.REDUCTIONS["mean"] and row_scale is None:
        fp16_scale = denom[1:2].clamp(1.0, _FP16_MEAN_SCALE_MAX)
        row_scale = fp16_scale.expand(x.shape[0]).contiguous()
    kw = dict(grads=grads, need_dx=need_dx, need_dw=need_dw, need_db=need_db, accum_dtype=accum_dtype,
              row_scale=row_scale, token_scaling=token_scaling, after_first_chunk=after_first_chunk)
    out = None
    if sweep_mode(x.shape[0], W.shape[0]) == "chunked":
        try:
            out = _token_chunks(x, W, target, b, w32, denom, args, want_z, want_pred, **kw)
        except _NoRoomForChunk as e:  # run the sliced sweep once this frame has let go of it
            warn_once("flce-no-room", f"ligerd op {OP}: {e}; this call runs the sliced sweep instead "
                      "(at most 56 MiB; slower: it computes the logits twice), as later calls will where "
                      "the chunk does not fit. LIGERD_FLCE_MODE=sliced always uses it; LIGERD_FLCE_CHUNK "
                      "sets a smaller chunk.")
    if out is None:
        out = _flce_sliced.sliced(x, W, target, b, w32, denom, args, want_z, want_pred, **kw)
    loss_rows, z_rows, pred, dx, dW, db = out
    if fp16_scale is not None:
        inv = 1.0 / fp16_scale
        for g in (dx, dW, db):
            if g is not None:
                ce.scale_(g, inv)
    if dW is not None and dW.dtype != W.dtype:
        dW = dW.to(W.dtype)
    if db is not None and db.dtype != b.dtype:
        db = db.to(b.dtype)
    return loss_rows, z_rows, pred, dx, dW, db


class _NoRoomForChunk(Exception):
    """The chunked sweep's logits buffer does not fit in the GPU's free memory."""


def _chunk_buffer(shape, dtype, device) -> torch.Tensor:
    """The [chunk, V] logits buffer, or _NoRoomForChunk where the allocator has no room for it
    (the caller falls back to the sliced sweep, whose buffers are a fraction of it)."""
    try:
        return torch.empty(shape, dtype=dtype, device=device)
    except torch.OutOfMemoryError:
        nbytes = shape[0] * shape[1] * torch.empty((), dtype=dtype).element_size()
        raise _NoRoomForChunk(f"no room for the {shape[0]} x {shape[1]} logits chunk "
                              f"({nbytes / 2**20:.0f} MiB)") from None


def _token_chunks(x, W, target, b, w32, denom, args, want_z, want_pred, *, grads: bool, need_dx: bool,
                  need_dw: bool, need_db: bool, accum_dtype, row_scale=None, token_scaling=False,
                  after_first_chunk=None):
    """The chunked sweep (the module docstring), before _chunked's fp16 unscaling and casts."""
    bt, _ = x.shape
    V = W.shape[0]
    dev = x.device
    C = chunk_tokens(bt, V, x.element_size())
    buf = _chunk_buffer((min(C, bt), V), x.dtype, dev)  # first: if it does not fit, nothing else was made
    rows = SweepRows(bt, dev, want_z, want_pred)
    dx, dW, db = grad_buffers(x, W, grads, need_dx, need_dw, need_db, accum_dtype)
    Wt = W.t()
    for s in range(0, bt, C):
        e = min(s + C, bt)
        xc = x[s:e]
        logits = buf[: e - s]
        gemm_(logits, xc, Wt, bias=b)
        rs = row_scale[s:e] if row_scale is not None else None
        if grads:
            lr, zr, pr = ce.cross_entropy_fwd_inplace(
                logits, target[s:e], w32, denom, rs, *args, token_scaling, want_z, want_pred)
        else:
            lr, zr, pr, _ = ce.cross_entropy_fwd(
                logits, target[s:e], w32, denom, *args, token_scaling, want_z, want_pred, False)
        rows.put(s, e, lr, zr, pr)
        if s == 0 and after_first_chunk is not None:
            after_first_chunk()  # raises on a bad target before any gradient GEMM is queued
        if not grads:
            continue
        if dx is not None:
            gemm_(dx[s:e], logits, W)
        if dW is not None:
            gemm_(dW, logits.t(), xc, accumulate=s > 0)
        if db is not None:
            db += logits.sum(dim=0, dtype=db.dtype)
    if bt == 0 and after_first_chunk is not None:
        after_first_chunk()
    return rows.loss, rows.z, rows.pred, dx, dW, db


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W, target, b, w32, denom, ignore_index, lse_square_scale, label_smoothing,
                reduction, softcap, want_z, want_pred, accum_dtype, token_scaling, check_targets):
        args = (ignore_index, lse_square_scale, label_smoothing, reduction, softcap)
        need_dx, need_dw = x.requires_grad, W.requires_grad
        need_db = b is not None and b.requires_grad
        any_grad = need_dx or need_dw or need_db
        defer = reduction == ce.REDUCTIONS["none"] and any_grad
        loss_rows, z_rows, pred, dx, dW, db = _chunked(
            x, W, target, b, w32, denom, args, want_z, want_pred, grads=any_grad and not defer,
            need_dx=need_dx, need_dw=need_dw, need_db=need_db, accum_dtype=accum_dtype,
            token_scaling=token_scaling, after_first_chunk=check_targets)
        ctx.defer = defer
        ctx.needs = (need_dx, need_dw, need_db)
        if defer:
            ctx.save_for_backward(x.detach(), W.detach(), target, b.detach() if b is not None else None,
                                  w32, denom)
            ctx.fwd = (args, accum_dtype, token_scaling)
        else:
            ctx.save_for_backward(dx, dW, db)
        ctx.mark_non_differentiable(pred)
        # mean/sum: the rows are already divided as the reduction asks; their sum is the loss.
        loss = loss_rows if reduction == ce.REDUCTIONS["none"] else loss_rows.sum()
        return loss, z_rows, pred

    @staticmethod
    def backward(ctx, dloss, _dz, _dpred):
        none = (None,) * 13
        if dloss is None:
            return (None, None, None, None) + none[1:]
        if ctx.defer:
            x, W, target, b, w32, denom = ctx.saved_tensors
            args, accum_dtype, token_scaling = ctx.fwd
            row_scale = dloss.detach().to(torch.float32).contiguous()
            _, _, _, dx, dW, db = _chunked(
                x, W, target, b, w32, denom, args, False, False, grads=True, need_dx=ctx.needs[0],
                need_dw=ctx.needs[1], need_db=ctx.needs[2], accum_dtype=accum_dtype,
                row_scale=row_scale, token_scaling=token_scaling)
        else:
            dx, dW, db = ctx.saved_tensors
            for g in (dx, dW, db):  # dloss is a scalar here
                if g is not None:
                    ce.scale_(g, dloss)
        return (dx, dW, None, db) + none[1:]



# ---------------------------------------------------------------------------------------------
# The traced path: one custom op for the whole chunk loop (see the module docstring).


def _grads_wanted(reduction: int, grad_x: bool, grad_w: bool, grad_b: bool) -> Tuple[bool, bool]:
    """(gradients computed in the forward, recomputed in the backward): reduction="none" defers."""
    any_grad = grad_x or grad_w or grad_b
    defer = reduction == ce.REDUCTIONS["none"] and any_grad
    return any_grad and not defer, defer


def _or_empty(x: torch.Tensor, *grads) -> tuple:
    """The gradients, an empty tensor for each absent one (a distinct one each: a custom op's
    outputs may not alias each other)."""
    return tuple(g if g is not None else x.new_empty((0,)) for g in grads)


def _fake_grads(x, W, b, gx: bool, gw: bool, gb: bool) -> tuple:
    return (torch.empty_like(x, memory_format=torch.contiguous_format) if gx else x.new_empty((0,)),
            torch.empty_like(W, memory_format=torch.contiguous_format) if gw else x.new_empty((0,)),
            torch.empty_like(b) if gb and b is not None else x.new_empty((0,)))


@_opdef.custom_op("fused_linear_cross_entropy_fwd")
def fused_linear_cross_entropy_fwd(
        x: torch.Tensor, W: torch.Tensor, target: torch.Tensor, b: Optional[torch.Tensor],
        w32: Optional[torch.Tensor], denom: torch.Tensor, ignore_index: int, lse_square_scale: float,
        label_smoothing: float, reduction: int, softcap: float, token_scaling: bool, want_z: bool,
        want_pred: bool, grad_x: bool, grad_w: bool, grad_b: bool, accum_fp32: bool
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, z_rows, pred, dx, dW, db) of x [BT, H] @ W.T (+ b) against target [BT]. loss is fp32,
    0-d (the sum of the rows, already divided as "mean" asks) or [BT] for reduction="none"; z_rows
    fp32 [BT] and pred int64 [BT] when asked for, else empty. dx, dW, db: the gradients of the
    loss (for a grad_output of 1) for the inputs whose grad_* is set, computed here (an empty
    tensor otherwise, and always for "none", whose backward recomputes them)."""
    in_fwd, _ = _grads_wanted(reduction, grad_x, grad_w, grad_b)
    args = (ignore_index, lse_square_scale, label_smoothing, reduction, softcap)
    with torch.no_grad():
        loss_rows, z_rows, pred, dx, dW, db = _chunked(
            x, W, target, b, w32, denom, args, want_z, want_pred, grads=in_fwd, need_dx=grad_x,
            need_dw=grad_w, need_db=grad_b and b is not None,
            accum_dtype=torch.float32 if accum_fp32 else None, token_scaling=token_scaling)
        loss = loss_rows if reduction == ce.REDUCTIONS["none"] else loss_rows.sum()
    return (loss, z_rows, pred) + _or_empty(x, dx, dW, db)


@fused_linear_cross_entropy_fwd.register_fake
def _(x, W, target, b, w32, denom, ignore_index, lse_square_scale, label_smoothing, reduction, softcap,
      token_scaling, want_z, want_pred, grad_x, grad_w, grad_b, accum_fp32):
    bt = x.shape[0]
    in_fwd, _ = _grads_wanted(reduction, grad_x, grad_w, grad_b)
    loss = x.new_empty((bt,) if reduction == ce.REDUCTIONS["none"] else (), dtype=torch.float32)
    z = x.new_empty((bt if want_z else 0,), dtype=torch.float32)
    pred = x.new_empty((bt if want_pred else 0,), dtype=torch.int64)
    return (loss, z, pred) + _fake_grads(x, W, b, in_fwd and grad_x, in_fwd and grad_w, in_fwd and grad_b)


@_opdef.custom_op("fused_linear_cross_entropy_bwd")
def fused_linear_cross_entropy_bwd(
        dloss: torch.Tensor, x: torch.Tensor, W: torch.Tensor, target: torch.Tensor,
        b: Optional[torch.Tensor], w32: Optional[torch.Tensor], denom: torch.Tensor, ignore_index: int,
        lse_square_scale: float, label_smoothing: float, reduction: int, softcap: float,
        token_scaling: bool, grad_x: bool, grad_w: bool, grad_b: bool, accum_fp32: bool
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """reduction="none"'s backward: (dx, dW, db) for the per-token upstream gradient ``dloss``
    [BT], folded into d logits inside the cross-entropy kernel (the logits are recomputed chunk by
    chunk); an empty tensor for each gradient not asked for."""
    args = (ignore_index, lse_square_scale, label_smoothing, reduction, softcap)
    with torch.no_grad():
        row_scale = dloss.to(torch.float32).contiguous()
        _, _, _, dx, dW, db = _chunked(
            x, W, target, b, w32, denom, args, False, False, grads=True, need_dx=grad_x,
            need_dw=grad_w, need_db=grad_b and b is not None,
            accum_dtype=torch.float32 if accum_fp32 else None, row_scale=row_scale,
            token_scaling=token_scaling)
    return _or_empty(x, dx, dW, db)


@fused_linear_cross_entropy_bwd.register_fake
def _(dloss, x, W, target, b, w32, denom, ignore_index, lse_square_scale, label_smoothing, reduction,
      softcap, token_scaling, grad_x, grad_w, grad_b, accum_fp32):
    return _fake_grads(x, W, b, grad_x, grad_w, grad_b)


def _traced_setup_context(ctx, inputs, output):
    (x, W, target, b, w32, denom, ignore_index, lse_square_scale, label_smoothing, reduction, softcap,
     token_scaling, _, _, grad_x, grad_w, grad_b, accum_fp32) = inputs
    _, ctx.defer = _grads_wanted(reduction, grad_x, grad_w, grad_b)
    ctx.grads = (grad_x, grad_w, grad_b and b is not None)
    if ctx.defer:
        ctx.save_for_backward(x, W, target, b, w32, denom)
        ctx.fwd = (ignore_index, lse_square_scale, label_smoothing, reduction, softcap, token_scaling,
                   accum_fp32)
    else:
        ctx.save_for_backward(*output[3:])
    ctx.mark_non_differentiable(*output[3:])  # the gradients themselves: internal, not for the user


def _scaled(g: torch.Tensor, dloss: torch.Tensor) -> torch.Tensor:
    """g * dloss (a 0-d fp32 tensor) in fp32, rounded once to g's dtype, as the eager path's in-place
    cross_entropy_scale kernel does; Inductor fuses it into one pass over g."""
    return (g.to(torch.float32) * dloss.to(torch.float32)).to(g.dtype)


def _traced_backward(ctx, dloss, _dz, _dpred, _ddx, _ddw, _ddb):
    nones = (None,) * 18
    if dloss is None:
        return nones
    gx, gw, gb = ctx.grads
    if ctx.defer:
        x, W, target, b, w32, denom = ctx.saved_tensors
        ii, lss, ls, red, cap, ts, acc = ctx.fwd
        dx, dW, db = fused_linear_cross_entropy_bwd(dloss, x, W, target, b, w32, denom, ii, lss, ls,
                                                    red, cap, ts, gx, gw, gb, acc)
    else:
        dx, dW, db = (_scaled(g, dloss) if want else None
                      for g, want in zip(ctx.saved_tensors, (gx, gw, gb)))
    return (dx if gx else None, dW if gw else None, None, db if gb else None) + nones[4:]


fused_linear_cross_entropy_fwd.register_autograd(_traced_backward, setup_context=_traced_setup_context)


def _check(x, W, target, b):
    for name, t in (("input", x), ("weight", W), ("target", target)):
        if not isinstance(t, torch.Tensor):
            _fail(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if W.dim() != 2:
        _fail(f"weight must be 2-D (V, H), got shape {tuple(W.shape)}")
    if x.shape[-1] != W.shape[1]:
        _fail(f"input's last dim {x.shape[-1]} does not match weight's hidden size {W.shape[1]}")
    if x.dtype != W.dtype:
        _fail(f"input is {x.dtype} but weight is {W.dtype}; they must match (the logits GEMM)")
    if b is not None and (b.shape != (W.shape[0],) or b.dtype != W.dtype):
        _fail(f"bias must be ({W.shape[0]},) of dtype {W.dtype}, got {tuple(b.shape)} {b.dtype}")
    if W.device != x.device or target.device != x.device or (b is not None and b.device != x.device):
        _fail("input, weight, target and bias must be on one device")


def _gemm_ready(t: torch.Tensor) -> torch.Tensor:
    """t itself when the GEMM can read it in place (a unit stride in one of its 2 dims), else a copy."""
    if t.dim() == 2 and (t.stride(1) == 1 or t.stride(0) == 1 or t.shape[0] <= 1 or t.shape[1] <= 1):
        return t
    return t.contiguous()


def fused_linear_cross_entropy(x, W, target, b=None, ce_weight=None, ignore_index=-100,
                               lse_square_scale=0.0, label_smoothing=0.0, reduction="mean",
                               softcap=None, return_z_loss=False, accum_dtype=None,
                               use_token_scaling=False, return_token_accuracy=False,
                               return_predicted_tokens=False, mean_divisor=None):
    """LigerFusedLinearCrossEntropyFunction.apply: (loss, z_loss, token_accuracy, predicted_tokens).
    x: [..., H] (flattened to [BT, H]), W: [V, H], target: [...] class indices, b: [V] or None.
    The loss is fp32 (as Liger's), z_loss in x's dtype, accuracy fp32.

    ``mean_divisor`` (a number or a 0-d/1-element tensor, with reduction="mean" and no ce_weight):
    "mean" divides by it instead of by the count of non-ignored targets. transformers' gradient
    accumulation (loss = sum / num_items_in_batch) then gets its gradient scaled by 1/n inside the
    kernel, in fp32, before d logits is rounded to x's dtype, as transformers' own loss does,
    rather than the sum's gradient rounded first and scaled by the backward afterwards."""
    _check(x, W, target, b)
    if mean_divisor is not None:
        _check_mean_divisor(mean_divisor, reduction, ce_weight)
    if accum_dtype is not None and accum_dtype not in (W.dtype, torch.float32):
        _fail(f"accum_dtype must be None, the weight's dtype or torch.float32, got {accum_dtype}")
    H = W.shape[1]
    x2 = _gemm_ready(x.reshape(-1, H))
    W = _gemm_ready(W)
    if b is not None and not b.is_contiguous():
        b = b.contiguous()
    t2 = target.reshape(-1)
    V = W.shape[0]
    # Argument checks shared with cross-entropy, on a stand-in of the logits' shape.
    _check_ce_args(x2, V, t2, ce_weight, ignore_index, lse_square_scale, label_smoothing, reduction, softcap)
    for name, flag in (("return_z_loss", return_z_loss), ("return_token_accuracy", return_token_accuracy),
                       ("return_predicted_tokens", return_predicted_tokens)):
        if not isinstance(flag, bool):
            _fail(f"{name} must be True or False. Got: {flag}")
    if t2.dtype != torch.int64:
        t2 = t2.long()
    w32 = ce_weight.detach().to(torch.float32).contiguous() if ce_weight is not None else None
    want_pred = return_token_accuracy or return_predicted_tokens
    denom = ce.cross_entropy_count(t2, w32, V, ignore_index)
    if mean_divisor is not None:  # the count and the (unweighted) weight sum: "mean"'s divisors
        if isinstance(mean_divisor, torch.Tensor):
            denom[0:2] = mean_divisor.detach().reshape(1).to(device=denom.device, dtype=torch.float32)
        else:
            denom[0:2] = float(mean_divisor)
    red = ce.REDUCTIONS[reduction]
    cap = float(softcap) if softcap is not None else 0.0
    if _opdef.eager():
        # Checked once the first chunk is queued: the host waits for the count while the GPU works.
        check = ce.check_targets_later(denom, t2, V, ignore_index, op=OP)
        loss, z_rows, pred = _FusedLinearCrossEntropy.apply(
            x2, W, t2, b, w32, denom, ignore_index, float(lse_square_scale), float(label_smoothing), red,
            cap, return_z_loss, want_pred, accum_dtype, bool(use_token_scaling), check)
        _report(loss if reduction != "none" else None, t2.numel(), V, H, x2.element_size())
    else:  # compiled or traced: the registered op (see the module docstring)
        grad = torch.is_grad_enabled()
        loss, z_rows, pred, _, _, _ = fused_linear_cross_entropy_fwd(
            x2, W, t2, b, w32, denom, ignore_index, float(lse_square_scale), float(label_smoothing), red,
            cap, bool(use_token_scaling), return_z_loss, want_pred, grad and x2.requires_grad,
            grad and W.requires_grad, grad and b is not None and b.requires_grad,
            accum_dtype == torch.float32 and W.dtype != torch.float32)
    if reduction == "none":
        z_loss = z_rows.to(x.dtype) if return_z_loss else None
    else:
        z_loss = z_rows.sum().to(x.dtype) if return_z_loss else None
    token_accuracy = None
    if return_token_accuracy:
        a = ((pred == t2) & (t2 != ignore_index)).to(torch.float32)
        token_accuracy = a if reduction == "none" else a.sum() / denom[0]
    return loss, z_loss, token_accuracy, (pred if return_predicted_tokens else None)


def _report(loss, tokens: int, V: int, H: int, elem_bytes: int) -> None:
    """Telemetry (ligerd._telemetry): the tokens this call saw, its loss (copied without a sync)
    and the logits memory it did not allocate: the full [tokens, V] against its chunk buffer (or
    the sliced sweep's slice buffer and dx accumulator)."""
    rep = _telemetry.get()
    if rep is not None:
        full = tokens * V * elem_bytes
        if sweep_mode(tokens, V) == "sliced":
            T, S = _flce_sliced.block_shape(tokens, V, H, elem_bytes, elem_bytes == 4)
            held = T * S * elem_bytes + (0 if elem_bytes == 4 else T * H * 4)
        else:
            held = min(tokens, chunk_tokens(tokens, V, elem_bytes)) * V * elem_bytes
        rep.note_loss(tokens, loss, memory_saved=max(0, full - held))


def _check_mean_divisor(d, reduction, ce_weight):
    """Checked before any GPU work: a tensor's value is not read here (no host sync)."""
    if reduction != "mean" or ce_weight is not None:
        _fail("mean_divisor needs reduction='mean' and no ce_weight")
    if isinstance(d, torch.Tensor):
        if d.numel() != 1:
            _fail(f"mean_divisor must hold one value, got shape {tuple(d.shape)}")
        if d.dtype == torch.bool or d.is_complex():
            _fail(f"mean_divisor must be a real number, got dtype {d.dtype}")
    elif isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d):
        _fail(f"mean_divisor must be a finite number or a one-element tensor, got {d!r}")


def _check_ce_args(x2, V, t2, ce_weight, ignore_index, lse_square_scale, label_smoothing, reduction, softcap):
    if t2.shape[0] != x2.shape[0]:
        _fail(f"target has {t2.shape[0]} elements but input has {x2.shape[0]} tokens")
    if t2.dtype not in (torch.int64, torch.int32):
        _fail(f"target must hold class indices (int64), got dtype {t2.dtype}")
    if not x2.is_cuda and not ce._backend.cpu_allowed():
        _fail(f"input must be a CUDA tensor, got a tensor on {x2.device}")
    if x2.dtype not in ce._SUPPORTED_DTYPES:
        _fail(f"input has dtype {x2.dtype}; supported: float32, bfloat16, float16")
    if ce_weight is not None:
        if not isinstance(ce_weight, torch.Tensor) or not torch.is_floating_point(ce_weight):
            _fail("ce_weight must be a floating-point tensor of size V")
        if ce_weight.shape != (V,):
            _fail(f"ce_weight has shape {tuple(ce_weight.shape)}, expected ({V},) (one per class)")
    if not isinstance(ignore_index, int) or isinstance(ignore_index, bool):
        _fail(f"ignore_index must be an int, got {ignore_index!r}")
    if not (0.0 <= float(label_smoothing) <= 1.0):
        _fail(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    if reduction not in ce.REDUCTIONS:
        _fail(f"reduction must be 'mean' or 'sum' or 'none'. Got: {reduction}")
    if softcap is not None and not float(softcap) > 0:
        _fail(f"softcap must greater than 0.0 or None. Got: {softcap}")
