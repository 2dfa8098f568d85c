"""Vocab-parallel fused linear + cross-entropy: the LM head sharded over the ranks of a process
group (tensor parallelism; Liger-Kernel issue #826), never the full logits on any rank.

Each rank holds the rows [start_r, start_r + V_r) of the head weight W ([V_r, H]; shards of
unequal size are allowed, e.g. V not divisible by the world size) and the same hidden states x
[BT, H] and targets [BT] (replicated, as tensor parallelism has them before the head). The tokens
are processed in chunks, as the unsharded fused loss does (ops/fused_linear_cross_entropy.py: the
same chunk size, computed from the *total* vocabulary so every rank runs the same number of chunks
and so the same collectives); per chunk, on every rank:

    logits_r = x_c @ W_r.T (+ b_r)                   ligerd gemm, in x's dtype, [chunk, V_r]
    m        = all_reduce_MAX(rowmax(logits_r))
    (s, t, u) = all_reduce_SUM(sum exp(logits_r - m),  the target's logit where this rank owns it,
                               sum of logits_r (label smoothing only))
    lse      = m + log s;  loss_row = lse - (1-ls) t - ls/V u (+ z * lse^2)
    d logits_r = (softmax_r * (1 + 2 z lse) - (1-ls) onehot_r - ls/V) * scale   written over logits_r
    dx      += d logits_r @ W_r                       ligerd gemm into an fp32 [BT, H] buffer
    dW_r    += d logits_r.T @ x_c                     ligerd gemm, beta = 1 after the first chunk
    db_r    += d logits_r.sum(0)

and after the last chunk dx = all_reduce_SUM(dx) (fp32, then cast to x's dtype), unless
``reduce_input_grad=False`` (a framework that reduces the input gradient itself, e.g. a Megatron
``copy_to_tensor_model_parallel_region`` before the head). dW_r and db_r stay local. As the
unsharded fused loss, every gradient is computed in the forward and the backward only scales them
by grad_output. Collectives per call: one small all_gather of each rank's layout and checks, then
two all_reduces per chunk on [chunk] and [k, chunk] fp32 vectors, and one of dx.

Per-chunk statistics (max, sum of exps, softmax) are torch elementwise ops in fp32 over the
[chunk, V_r] logits (a fused kernel for them is future work); the GEMMs are ligerd's. Supported:
reduction "mean" (over the non-ignored targets) and "sum", ignore_index, label_smoothing, z-loss
(lse_square_scale), a bias shard, accum_dtype. Refused with an error naming the op: reduction
"none", softcap, ce_weight, return_z_loss, float16 inputs, torch.compile tracing.

Every rank raises the same error for a bad layout (hidden sizes, token counts, dtypes, targets,
options or grad flags that differ between ranks; a total vocabulary other than ``vocab_size``): the
checks run on the gathered layout, so no rank is left waiting in a collective.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from ligerd._errors import OpInputError
from ligerd.ops import _opdef
from ligerd.ops.fused_linear_cross_entropy import chunk_tokens
from ligerd.ops.gemm import gemm_

OP = "vocab_parallel_fused_linear_cross_entropy"
_DTYPES = (torch.float32, torch.bfloat16)  # fp16: see _local_problem


def _fail(msg: str):
    raise OpInputError(f"ligerd op {OP}: {msg}", op=OP)


def vocab_shard_range(vocab_size: int, rank: int, world_size: int) -> Tuple[int, int]:
    """[start, end) of ``rank``'s rows when ``vocab_size`` rows are split as torch.chunk and
    DTensor's Shard(0) split them: ceil(V / world) rows per rank, the last ranks shorter (possibly
    empty)."""
    if world_size < 1 or not 0 <= rank < world_size:
        _fail(f"rank {rank} is not in a world of size {world_size}")
    per = -(-vocab_size // world_size)
    return min(rank * per, vocab_size), min((rank + 1) * per, vocab_size)


def _unwrap(t):
    """A DTensor's local shard (differentiable) and its placements; a plain tensor as is."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch without DTensor
        return t, None, None
    if isinstance(t, DTensor):
        return t.to_local(), tuple(t.placements), t.device_mesh
    return t, None, None


def _local_problem(x, W, target, b) -> Optional[str]:
    """What is wrong with this rank's own inputs, or None (gathered before anyone raises)."""
    for name, t in (("input", x), ("weight", W), ("target", target)):
        if not isinstance(t, torch.Tensor):
            return f"{name} must be a torch.Tensor, got {type(t).__name__}"
    if W.dim() != 2:
        return f"weight shard must be 2-D (V_rank, H), got shape {tuple(W.shape)}"
    if W.shape[0] < 1:
        return "this rank's weight shard has no vocabulary rows; every rank must hold at least one"
    if x.shape[-1] != W.shape[1]:
        return f"input's last dim {x.shape[-1]} does not match the weight shard's hidden size {W.shape[1]}"
    if x.dtype != W.dtype:
        return f"input is {x.dtype} but the weight shard is {W.dtype}; they must match"
    if x.dtype not in _DTYPES:
        # fp16 would need the unsharded op's d-logits scaling (its "mean" gradients fall into
        # fp16's subnormals), which is not done here
        return f"input has dtype {x.dtype}; supported: float32, bfloat16 (float16 is not done)"
    if target.dtype not in (torch.int64, torch.int32):
        return f"target must hold class indices (int64), got dtype {target.dtype}"
    if target.numel() * W.shape[1] != x.numel():
        return f"target has {target.numel()} elements but input has {x.numel() // max(W.shape[1], 1)} tokens"
    if b is not None and (b.shape != (W.shape[0],) or b.dtype != W.dtype):
        return f"bias shard must be ({W.shape[0]},) of dtype {W.dtype}, got {tuple(b.shape)} {b.dtype}"
    devs = {t.device for t in (x, W, target) + ((b,) if b is not None else ())}
    if len(devs) != 1:
        return f"input, weight, target and bias must be on one device, got {sorted(map(str, devs))}"
    return None


def _target_fingerprint(t: torch.Tensor) -> int:
    """An int64 digest of the targets (position-weighted sum): ranks given different targets
    disagree on it."""
    if t.numel() == 0:
        return 0
    pos = torch.arange(t.numel(), device=t.device, dtype=torch.int64) % 1000003 + 1
    return int(((t.long() + 7) * pos).sum())


def _gather_layout(group, x, W, target, b, ignore_index, opts, needs) -> List[dict]:
    """Every rank's layout and local problem, in rank order (one all_gather_object)."""
    problem = _local_problem(x, W, target, b)
    info = {"problem": problem, "opts": opts}
    if problem is None:
        t = target.reshape(-1)
        valid = t != ignore_index
        tv = t[valid]
        info.update(rows=int(W.shape[0]), hidden=int(W.shape[1]), tokens=int(t.numel()),
                    dtype=str(x.dtype), bias=b is not None,
                    grads=needs,
                    tmin=int(tv.min()) if tv.numel() else 0, tmax=int(tv.max()) if tv.numel() else -1,
                    digest=_target_fingerprint(t))
    out: List[Optional[dict]] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, info, group=group)
    return out


def _check_layout(infos: Sequence[dict], vocab_size: Optional[int]) -> int:
    """Raises the same error on every rank for a bad layout; returns the total vocabulary."""
    bad = [(r, i["problem"]) for r, i in enumerate(infos) if i["problem"] is not None]
    if bad:
        _fail("; ".join(f"rank {r}: {p}" for r, p in bad))
    for key, what in (("opts", "options (ignore_index, reduction, label_smoothing, lse_square_scale, "
                               "accum_dtype, reduce_input_grad)"),
                      ("hidden", "hidden size"), ("tokens", "token count"), ("dtype", "dtype"),
                      ("bias", "bias presence"), ("grads", "requires_grad flags (input, weight, bias)"),
                      ("digest", "targets")):
        vals = [i[key] for i in infos]
        if any(v != vals[0] for v in vals):
            _fail(f"the ranks disagree on the {what}: " + ", ".join(f"rank {r}: {v}" for r, v in enumerate(vals))
                  + " (tensor parallelism needs the same tokens, targets and options on every rank)")
    V = sum(i["rows"] for i in infos)
    if vocab_size is not None and V != vocab_size:
        _fail(f"the shards hold {V} vocabulary rows in all ({[i['rows'] for i in infos]}), "
              f"expected vocab_size={vocab_size}")
    lo, hi = infos[0]["tmin"], infos[0]["tmax"]
    if hi >= 0 and (lo < 0 or hi >= V):
        _fail(f"target index out of range: targets span [{lo}, {hi}] but the vocabulary is [0, {V}) "
              "(ignore_index excepted)")
    return V


class _VocabParallelFLCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W, target, b, group, start, V, ignore_index, label_smoothing, z_scale,
                reduction, accum_dtype, reduce_dx, needs):
        loss, dx, dW, db = _sweep(x, W, target, b, group, start, V, ignore_index, label_smoothing,
                                  z_scale, reduction, accum_dtype, reduce_dx, needs)
        ctx.save_for_backward(dx, dW, db)
        return loss

    @staticmethod
    def backward(ctx, dloss):
        dx, dW, db = ctx.saved_tensors
        out = []
        for g in (dx, dW, db):
            if g is not None:  # in fp32, rounded once to the gradient's dtype
                g = (g.float() * dloss.float()).to(g.dtype)
            out.append(g)
        return (out[0], out[1], None, out[2]) + (None,) * 10


def _sweep(x, W, target, b, group, start, V, ignore_index, ls, z_scale, reduction, accum_dtype,
           reduce_dx, needs):
    """One pass over the chunks (module docstring): (loss, dx, dW, db); a gradient not asked for
    is None."""
    bt = x.shape[0]
    Vr = W.shape[0]
    dev = x.device
    need_dx, need_dw, need_db = needs  # decided outside the autograd.Function (grad mode is off in it)
    grads = need_dx or need_dw or need_db
    valid = target != ignore_index
    n = int(valid.sum())
    scale = 1.0 / max(n, 1) if reduction == "mean" else 1.0
    # this rank's column of each target: -1 where another rank owns it or the token is ignored
    local_t = target - start
    mine = valid & (local_t >= 0) & (local_t < Vr)
    local_t = torch.where(mine, local_t, torch.full_like(local_t, -1))
    C = chunk_tokens(bt, V, x.element_size())  # from the total V: the same on every rank
    x = x.detach()
    Wd = W.detach()
    bd = b.detach() if b is not None else None
    Wt = Wd.t()
    acc = accum_dtype if accum_dtype is not None else W.dtype
    dx = torch.empty((bt, x.shape[1]), dtype=torch.float32, device=dev) if need_dx else None
    dW = torch.empty(W.shape, dtype=acc, device=dev) if need_dw else None
    db = torch.zeros(Vr, dtype=torch.float32, device=dev) if need_db else None
    loss = torch.zeros((), dtype=torch.float32, device=dev)
    buf = torch.empty((min(C, bt), Vr), dtype=x.dtype, device=dev)
    k = 3 if ls > 0 else 2
    for s in range(0, bt, C):
        e = min(s + C, bt)
        xc = x[s:e]
        logits = buf[: e - s]
        gemm_(logits, xc, Wt, bias=bd)
        lf = logits.float()  # logits itself for fp32 inputs: overwritten below, as they may be
        m = lf.amax(dim=1)
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
        sums = torch.empty((k, e - s), dtype=torch.float32, device=dev)
        lt = local_t[s:e]
        has = lt >= 0
        lt0 = lt.clamp(min=0)[:, None]
        sums[1] = torch.where(has, lf.gather(1, lt0)[:, 0], torch.zeros_like(m))
        if ls > 0:
            sums[2] = lf.sum(dim=1)
        p = lf.sub_(m[:, None]).exp_()  # in place: fp32 [chunk, V_r], the only fp32 block
        sums[0] = p.sum(dim=1)
        dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
        lse = m + torch.log(sums[0])
        row = lse - (1.0 - ls) * sums[1]
        if ls > 0:
            row = row - (ls / V) * sums[2]
        if z_scale:
            row = row + z_scale * lse * lse
        v = valid[s:e]
        loss += torch.where(v, row, torch.zeros_like(row)).sum() * scale
        if not grads:
            continue
        # d logits_r = softmax_r (1 + 2 z lse) - (1-ls) onehot_r - ls/V, zero on ignored rows
        f = torch.where(v, torch.full_like(m, scale), torch.zeros_like(m))
        a = (1.0 + 2.0 * z_scale * lse) * f / sums[0]
        p.mul_(a[:, None])
        if ls > 0:
            p.sub_((ls / V) * f[:, None])
        # the target's column, on the rank that owns it (no host sync: a masked scatter)
        p.scatter_add_(1, lt0, torch.where(has, -(1.0 - ls) * f, torch.zeros_like(f))[:, None])
        if p.data_ptr() != logits.data_ptr():
            logits.copy_(p)  # d logits in x's dtype, as the unsharded kernel writes them
        del p, lf
        if dx is not None:
            gemm_(dx[s:e], logits, Wd)
        if dW is not None:
            gemm_(dW, logits.t(), xc, accumulate=s > 0)
        if db is not None:
            db += logits.sum(dim=0, dtype=torch.float32)
    if bt == 0 and dW is not None:
        dW.zero_()
    del buf
    if dx is not None:
        if reduce_dx:
            dist.all_reduce(dx, op=dist.ReduceOp.SUM, group=group)
        dx = dx.to(x.dtype)
    if dW is not None and dW.dtype != W.dtype:
        dW = dW.to(W.dtype)
    if db is not None:
        db = db.to(b.dtype)
    return loss, dx, dW, db


def vocab_parallel_fused_linear_cross_entropy(
        x: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, bias: Optional[torch.Tensor] = None,
        *, group=None, vocab_size: Optional[int] = None, ce_weight=None, ignore_index: int = -100,
        lse_square_scale: float = 0.0, label_smoothing: float = 0.0, reduction: str = "mean",
        softcap=None, return_z_loss: bool = False, accum_dtype=None,
        reduce_input_grad: bool = True) -> torch.Tensor:
    """The cross-entropy of x [..., H] @ W.T (+ b) against target [...], where this rank holds the
    vocabulary shard ``weight`` [V_rank, H] (and ``bias`` [V_rank]) of the ranks of ``group``
    (default: the world), in rank order. ``weight`` may be a DTensor sharded Shard(0) over a
    1-D device mesh (its group is then used; ``x`` may be a replicated DTensor). Returns the fp32
    loss, the same on every rank. ``vocab_size``, when given, is checked against the shards' total.
    See the module docstring for what is supported and refused."""
    if not dist.is_available() or not dist.is_initialized():
        _fail("torch.distributed is not initialized (call init_process_group first)")
    if not _opdef.eager():
        _fail("is eager-only (its collectives and layout check need the host); run it outside "
              "torch.compile / tracing")
    if ce_weight is not None:
        _fail("ce_weight is not supported (class weights over a sharded vocabulary are not done)")
    if softcap is not None:
        _fail("softcap is not supported (the tanh cap's gradient is not done for sharded logits)")
    if return_z_loss:
        _fail("return_z_loss is not supported; lse_square_scale adds the z-loss to the loss")
    if reduction not in ("mean", "sum"):
        _fail(f"reduction must be 'mean' or 'sum' (per-token 'none' is not done). Got: {reduction}")
    if not isinstance(ignore_index, int) or isinstance(ignore_index, bool):
        _fail(f"ignore_index must be an int, got {ignore_index!r}")
    if not 0.0 <= float(label_smoothing) <= 1.0:
        _fail(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    if accum_dtype is not None and accum_dtype not in (torch.float32,) and not (
            isinstance(weight, torch.Tensor) and accum_dtype == weight.dtype):
        _fail(f"accum_dtype must be None, the weight's dtype or torch.float32, got {accum_dtype}")
    weight, w_place, mesh = _unwrap(weight)
    x, _, _ = _unwrap(x)
    target, _, _ = _unwrap(target)
    if bias is not None:
        bias, _, _ = _unwrap(bias)
    if w_place is not None:
        from torch.distributed.tensor import Shard
        if mesh.ndim != 1 or len(w_place) != 1 or not isinstance(w_place[0], Shard) or w_place[0].dim != 0:
            _fail(f"a DTensor weight must be sharded Shard(0) over a 1-D mesh, got placements {w_place} "
                  f"on a {mesh.ndim}-D mesh")
        mesh_group = mesh.get_group()
        if group is not None and group != mesh_group:
            _fail("group differs from the DTensor weight's mesh group; pass one or the other")
        group = mesh_group
    if group is None:
        group = dist.group.WORLD
    opts = (ignore_index, reduction, float(label_smoothing), float(lse_square_scale), str(accum_dtype),
            bool(reduce_input_grad))
    grad_on = torch.is_grad_enabled()
    needs = (grad_on and isinstance(x, torch.Tensor) and x.requires_grad,
             grad_on and isinstance(weight, torch.Tensor) and weight.requires_grad,
             grad_on and bias is not None and bias.requires_grad)
    infos = _gather_layout(group, x, weight, target, bias, ignore_index, opts, needs)
    V = _check_layout(infos, vocab_size)
    rank = dist.get_rank(group)
    start = sum(i["rows"] for i in infos[:rank])
    H = weight.shape[1]
    x2 = x.reshape(-1, H)
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    W = weight if weight.is_contiguous() else weight.contiguous()
    b = bias if bias is None or bias.is_contiguous() else bias.contiguous()
    t2 = target.reshape(-1).long()
    return _VocabParallelFLCE.apply(x2, W, t2, b, group, start, V, ignore_index, float(label_smoothing),
                                    float(lse_square_scale), reduction, accum_dtype,
                                    bool(reduce_input_grad), needs)


class LigerVocabParallelFusedLinearCrossEntropyLoss(torch.nn.Module):
    """Module form of ``vocab_parallel_fused_linear_cross_entropy``, called as Liger's
    LigerFusedLinearCrossEntropyLoss is: ``loss_fn(lin_weight_shard, _input, target, bias_shard)``."""

    def __init__(self, group=None, vocab_size: Optional[int] = None, ignore_index: int = -100,
                 lse_square_scale: float = 0.0, label_smoothing: float = 0.0, reduction: str = "mean",
                 softcap=None, accum_dtype=None, reduce_input_grad: bool = True):
        super().__init__()
        self.group = group
        self.kw = dict(vocab_size=vocab_size, ignore_index=ignore_index,
                       lse_square_scale=lse_square_scale, label_smoothing=label_smoothing,
                       reduction=reduction, softcap=softcap, accum_dtype=accum_dtype,
                       reduce_input_grad=reduce_input_grad)

    def forward(self, lin_weight, _input, target, bias=None):
        return vocab_parallel_fused_linear_cross_entropy(_input, lin_weight, target, bias,
                                                         group=self.group, **self.kw)


__all__ = ["vocab_parallel_fused_linear_cross_entropy", "LigerVocabParallelFusedLinearCrossEntropyLoss",
           "vocab_shard_range"]
