"""The chunk loop shared by every loss of ``ligerd.chunked_loss``: logits per chunk through the
executor's ``gemm`` op, never the full [tokens, V] logits, and the three gradients (input, weight,
bias) accumulated in the forward, as Liger-Kernel's chunked losses do.

Two sweeps live here:

* ``selected_sweep`` (preference losses, KTO, GRPO, the selected-token log-prob gatherer): the loss
  is a function of the per-token log-probability of one selected token per position. A *group* is
  a set of whole sequences (a chosen/rejected pair, one KTO or GRPO sequence, or as many of them
  as the budget holds); per group
      logits     = x_g @ W.T / T (+ b / T)                 ligerd gemm (alpha = 1/T)
      -logp      = ligerd cross_entropy_fwd, reduction none (lse - z_y per token)
      c          = d loss_g / d logp                       torch autograd on the [seq, T] logps
      d logits   = c * (onehot(y) - softmax) / T           ligerd cross_entropy_fwd in place,
                                                           row_scale = -c / T
      dx_g = d logits @ W ; dW += d logits.T @ x_g ; db += column sums     ligerd gemm
  Every loss Liger offers here is a sum over sequences of terms that see only their own
  sequence (the normalisers come from the masks, known beforehand), so the group's loss is exact.
  When one group's tokens do not fit the budget (very long sequences), its logits are computed
  twice: once for the log-probs, once for the gradient, chunk by chunk (never the group whole).

* ``logits_sweep`` (distillation): the loss is row-wise over the logits, so chunks are plain token
  ranges; the chunk's loss and its gradient with respect to the logits are computed by the
  caller's function (row kernels and fp32 torch ops on sub-blocks of the chunk's rows; see
  distillation.py and docs/chunked_loss.md).

Memory budget. Beyond the inputs, their gradients and O(tokens) vectors, a sweep holds one
[chunk, V] logits buffer in the input's dtype (two for distillation: student and teacher) plus,
for distillation, the fp32 temporaries of the chunk math, which runs on sub-blocks of the
chunk's rows sized by the same budget but at least SUB_MIN_ROWS (64) rows (``sub_rows``). The
chunk is the most tokens whose buffers stay within BUDGET_SHARE (9.5%) of the full logits in the
input's dtype, capped at
BUDGET_MAX_BYTES (512 MiB), rounded down to a multiple of 128 rows (GEMM tiles) and never below 128
rows (or all the tokens, if fewer): the same rule as the fused linear cross-entropy
(ligerd/ops/fused_linear_cross_entropy.py), where fewer, larger chunks keep the dW GEMM fast.
A selected-token sweep whose smallest group (one chosen/rejected pair, one sequence) is larger
than that chunk may take the whole group as its chunk instead, when the group's logits fit
GROUP_SHARE (25%) of the full logits and 1 GiB (``group_chunk_rows``): one logits GEMM instead of
two for that group. ``LIGERD_CHUNKED_LOSS_CHUNK`` (tokens) overrides both; the tests use it to
force many chunks and the two-pass path.
"""

from __future__ import annotations

import os
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from ligerd import _backend
from ligerd._errors import OpInputError
from ligerd.ops import cross_entropy as ce
from ligerd.ops.gemm import gemm_

BUDGET_SHARE = 0.095
BUDGET_MAX_BYTES = 512 << 20
SUB_MIN_ROWS = 64
CHUNK_ALIGN = 128
GROUP_SHARE = 0.25
GROUP_MAX_BYTES = 1 << 30
_ENV = "LIGERD_CHUNKED_LOSS_CHUNK"
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def fail(op: str, msg: str):
    raise OpInputError(f"ligerd op {op}: {msg}", op=op)


def chunk_rows(op: str, bt: int, v: int, elem_bytes: int, row_bytes: Optional[int] = None) -> int:
    """Tokens per chunk: the module docstring's rule. ``row_bytes`` is one token's working set
    (default: one row of logits, ``v * elem_bytes``)."""
    env = os.environ.get(_ENV)
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            fail(op, f"{_ENV} must be a positive integer, got {env!r}")
        return max(min(n, bt), 1)
    per_row = max(row_bytes if row_bytes is not None else v * elem_bytes, 1)
    budget = min(BUDGET_SHARE * bt * v * elem_bytes, BUDGET_MAX_BYTES)
    c = int(budget // per_row) // CHUNK_ALIGN * CHUNK_ALIGN
    return max(min(max(c, CHUNK_ALIGN), bt), 1)


def group_chunk_rows(op: str, bt: int, v: int, elem_bytes: int, unit_rows: int) -> int:
    """Tokens per chunk of a selected-token sweep whose smallest group (a pair, a sequence) has
    ``unit_rows`` tokens: ``chunk_rows``, raised to one whole group when that group's logits fit
    GROUP_SHARE (25%) of the full logits and GROUP_MAX_BYTES (1 GiB), so that the group's logits
    are computed once (the two-pass path recomputes them: a fourth GEMM); else ``chunk_rows``."""
    c = chunk_rows(op, bt, v, elem_bytes)
    if os.environ.get(_ENV) or unit_rows <= c:
        return c
    group_bytes = unit_rows * v * elem_bytes
    if group_bytes <= GROUP_SHARE * bt * v * elem_bytes and group_bytes <= GROUP_MAX_BYTES:
        return unit_rows
    return c


def gemm_ready(t: torch.Tensor) -> torch.Tensor:
    """t itself when the GEMM can read it in place (a unit stride in one of its 2 dims), else a copy."""
    if t.dim() == 2 and (t.stride(1) == 1 or t.stride(0) == 1 or t.shape[0] <= 1 or t.shape[1] <= 1):
        return t
    return t.contiguous()


def check_linear(op: str, x: torch.Tensor, W: torch.Tensor, b: Optional[torch.Tensor], what: str = "input",
                 wname: str = "weight", bname: str = "bias") -> None:
    """x [..., H], W [V, H], b [V] or None: types, shapes, dtypes, one device."""
    for name, t in ((what, x), (wname, W)):
        if not isinstance(t, torch.Tensor):
            fail(op, f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if W.dim() != 2:
        fail(op, f"{wname} must be 2-D (V, H), got shape {tuple(W.shape)}")
    if x.dim() < 1 or x.shape[-1] != W.shape[1]:
        fail(op, f"{what}'s last dim {x.shape[-1] if x.dim() else None} does not match {wname}'s hidden "
                 f"size {W.shape[1]}")
    if x.dtype not in SUPPORTED_DTYPES:
        fail(op, f"{what} has dtype {x.dtype}; supported: float32, bfloat16, float16")
    if x.dtype != W.dtype:
        fail(op, f"{what} is {x.dtype} but {wname} is {W.dtype}; they must match (the logits GEMM)")
    if b is not None:
        if not isinstance(b, torch.Tensor) or b.shape != (W.shape[0],) or b.dtype != W.dtype:
            fail(op, f"{bname} must be a ({W.shape[0]},) tensor of dtype {W.dtype}, got "
                     f"{tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__}"
                     f"{' ' + str(b.dtype) if isinstance(b, torch.Tensor) else ''}")
        if b.device != x.device:
            fail(op, f"{bname} is on {b.device} but {what} is on {x.device}")
    if W.device != x.device:
        fail(op, f"{wname} is on {W.device} but {what} is on {x.device}")
    if not x.is_cuda and not _backend.cpu_allowed():
        fail(op, f"{what} must be a CUDA tensor, got a tensor on {x.device}")


def check_index(op: str, name: str, t: torch.Tensor, shape: Tuple[int, ...], device) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        fail(op, f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        fail(op, f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    if t.dtype not in (torch.int64, torch.int32):
        fail(op, f"{name} must hold token ids (int64), got dtype {t.dtype}")
    if t.device != device:
        fail(op, f"{name} is on {t.device} but the input is on {device}")
    return t.reshape(-1).long().contiguous()


class Linear:
    """One linear head as the sweeps use it: x as [rows, H] rows, W (GEMM-ready), the bias
    divided by the temperature (the logits GEMM scales x @ W.T by alpha = 1/T but adds the bias
    as is), and which gradients are wanted."""

    def __init__(self, x: torch.Tensor, W: torch.Tensor, b: Optional[torch.Tensor], temperature: float = 1.0,
                 need_dx: bool = False, need_dw: bool = False, need_db: bool = False,
                 dw_dtype: Optional[torch.dtype] = None):
        H = W.shape[1]
        self.shape = x.shape
        self.x = gemm_ready(x.reshape(-1, H))
        self.W = gemm_ready(W)
        self.Wt = self.W.t()
        self.b = b
        self.inv_t = 1.0 / float(temperature)
        if b is None:
            self.b_scaled = None
        elif self.inv_t == 1.0:
            self.b_scaled = b if b.is_contiguous() else b.contiguous()
        else:
            self.b_scaled = (b.detach().to(torch.float32) * self.inv_t).to(b.dtype)
        dev = self.x.device
        self.dx = torch.empty(self.x.shape, dtype=x.dtype, device=dev) if need_dx else None
        self.w_dtype = W.dtype
        self.dW = torch.zeros(W.shape, dtype=dw_dtype or W.dtype, device=dev) if need_dw else None
        self.db = torch.zeros(W.shape[0], dtype=torch.float32, device=dev) if need_db else None

    @property
    def V(self) -> int:
        return self.W.shape[0]

    @property
    def wants_grads(self) -> bool:
        return self.dx is not None or self.dW is not None or self.db is not None

    def logits(self, out: torch.Tensor, segments: Sequence[Tuple[int, int]]) -> None:
        """out[k] = (x[r] @ W.T + b) / T for the rows r of the segments, in order."""
        off = 0
        for r0, r1 in segments:
            gemm_(out[off:off + r1 - r0], self.x[r0:r1], self.Wt, bias=self.b_scaled, alpha=self.inv_t)
            off += r1 - r0

    def accumulate(self, dlogits: torch.Tensor, segments: Sequence[Tuple[int, int]], add_dx: bool = False) -> None:
        """dlogits (over the segments' rows, w.r.t. the raw logits x @ W.T + b) into dx, dW, db;
        dx's rows are written, or added to with ``add_dx`` (a second pass over the same rows)."""
        off = 0
        for r0, r1 in segments:
            d = dlogits[off:off + r1 - r0]
            if self.dx is not None:
                gemm_(self.dx[r0:r1], d, self.W, accumulate=add_dx)
            if self.dW is not None:
                gemm_(self.dW, d.t(), self.x[r0:r1], accumulate=True)
            off += r1 - r0
        if self.db is not None:
            self.db += dlogits.sum(dim=0, dtype=torch.float32)

    def grads(self):
        """(dx in x's original shape, dW, db in the bias dtype); None where not wanted."""
        dx = self.dx.view(self.shape) if self.dx is not None else None
        db = self.db.to(self.b.dtype) if self.db is not None else None
        dW = self.dW.to(self.w_dtype) if self.dW is not None and self.dW.dtype != self.w_dtype else self.dW
        return dx, dW, db


def _segments_rows(segments) -> int:
    return sum(r1 - r0 for r0, r1 in segments)


def split_segments(segments: Sequence[Tuple[int, int]], chunk: int) -> List[List[Tuple[int, int]]]:
    """Cut row segments into pieces of at most ``chunk`` rows each, in order."""
    pieces, cur, room = [], [], chunk
    for r0, r1 in segments:
        while r0 < r1:
            take = min(room, r1 - r0)
            cur.append((r0, r0 + take))
            r0 += take
            room -= take
            if room == 0:
                pieces.append(cur)
                cur, room = [], chunk
    if cur:
        pieces.append(cur)
    return pieces


def _gather(t: torch.Tensor, segments) -> torch.Tensor:
    if len(segments) == 1:
        r0, r1 = segments[0]
        return t[r0:r1]
    return torch.cat([t[r0:r1] for r0, r1 in segments])


def _neg_logp_rows(lin: Linear, buf: torch.Tensor, tgt: torch.Tensor, denom: torch.Tensor, ignore_index: int,
                   piece) -> torch.Tensor:
    """-log softmax(logits / T)[target] for the piece's rows (0 where the target is ignored); the
    piece's logits are left in buf."""
    n = _segments_rows(piece)
    logits = buf[:n]
    lin.logits(logits, piece)
    rows, _, _, _ = ce.cross_entropy_fwd(logits, _gather(tgt, piece), None, denom, ignore_index, 0.0, 0.0,
                                         ce.REDUCTIONS["none"], 0.0, False, False, False, False)
    return rows


def target_denom(op: str, tgt: torch.Tensor, V: int, ignore_index: int):
    """The count the cross-entropy kernel takes (unused by reduction none, but part of its
    contract) and the deferred check that every target is in [0, V) or ignore_index."""
    denom = ce.cross_entropy_count(tgt, None, V, ignore_index)
    return denom, ce.check_targets_later(denom, tgt, V, ignore_index, op=op)


def selected_logps(op: str, lin: Linear, tgt: torch.Tensor, ignore_index: int, chunk: int,
                   denom: Optional[torch.Tensor] = None) -> torch.Tensor:
    """log softmax(x @ W.T / T + b / T)[target] for every row (fp32 [rows]; 0 at ignored targets),
    chunk by chunk, no gradients: the reference model's pass and the gatherer's forward."""
    rows = lin.x.shape[0]
    out = torch.empty(rows, dtype=torch.float32, device=lin.x.device)
    if denom is None:
        denom, check = target_denom(op, tgt, lin.V, ignore_index)
    else:
        check = None
    if rows == 0:
        if check is not None:
            check()
        return out
    buf = torch.empty((min(chunk, rows), lin.V), dtype=lin.x.dtype, device=lin.x.device)
    for i, piece in enumerate(split_segments([(0, rows)], chunk)):
        (r0, r1), = piece
        out[r0:r1] = _neg_logp_rows(lin, buf, tgt, denom, ignore_index, piece).neg_()
        if i == 0 and check is not None:
            check()
    return out


def scatter_grad(lin: Linear, tgt: torch.Tensor, grad_logp: torch.Tensor, ignore_index: int, chunk: int,
                 denom: torch.Tensor) -> None:
    """Adds d/d(x, W, b) of sum(grad_logp * logp) (logp as in ``selected_logps``) into lin's
    gradients, recomputing the logits chunk by chunk: the gatherer's backward."""
    rows = lin.x.shape[0]
    if rows == 0:
        return
    rs = (grad_logp.detach().to(torch.float32) * -lin.inv_t).contiguous()
    buf = torch.empty((min(chunk, rows), lin.V), dtype=lin.x.dtype, device=lin.x.device)
    for piece in split_segments([(0, rows)], chunk):
        (r0, r1), = piece
        logits = buf[:r1 - r0]
        lin.logits(logits, piece)
        ce.cross_entropy_fwd_inplace(logits, tgt[r0:r1], None, denom, rs[r0:r1], ignore_index, 0.0, 0.0,
                                     ce.REDUCTIONS["none"], 0.0, False, False, False)
        lin.accumulate(logits, piece)


GroupLoss = Callable[[Sequence[Tuple[int, int]], torch.Tensor], Tuple[torch.Tensor, tuple]]


def selected_sweep(op: str, lin: Linear, tgt: torch.Tensor, seq_len: int, groups, group_loss: GroupLoss,
                   ignore_index: int, chunk: int, denom: torch.Tensor, check=None) -> Tuple[torch.Tensor, list]:
    """The first sweep of the module docstring. ``groups``: lists of sequence ranges [(s0, s1), ...];
    ``group_loss(ranges, logp)`` gets the group's log-probs as fp32 [sequences, seq_len] (in the
    ranges' order, requiring grad) and returns (loss, aux tuple). Returns (total loss fp32, the
    list of each group's aux)."""
    dev = lin.x.device
    total = torch.zeros((), dtype=torch.float32, device=dev)
    auxes = []
    buf = None
    for gi, ranges in enumerate(groups):
        segments = [(s0 * seq_len, s1 * seq_len) for s0, s1 in ranges if s1 > s0]
        nseq = sum(s1 - s0 for s0, s1 in ranges)
        pieces = split_segments(segments, chunk)
        if buf is None:
            buf = torch.empty((min(chunk, lin.x.shape[0]), lin.V), dtype=lin.x.dtype, device=dev)
        parts = []
        for pi, piece in enumerate(pieces):
            parts.append(_neg_logp_rows(lin, buf, tgt, denom, ignore_index, piece))
            if gi == 0 and pi == 0 and check is not None:
                check()  # a bad target raises before any gradient work is queued
        if parts:
            logp = torch.cat(parts).neg_().view(nseq, seq_len)
        else:
            logp = torch.zeros((nseq, seq_len), dtype=torch.float32, device=dev)
        with torch.enable_grad():
            leaf = logp.detach().requires_grad_(lin.wants_grads)
            loss, aux = group_loss(ranges, leaf)
            c = None
            if lin.wants_grads:
                if loss.requires_grad:
                    (c,) = torch.autograd.grad(loss, leaf, allow_unused=True)
                if c is None:  # a loss that does not depend on the log-probs: zero gradients
                    c = torch.zeros_like(leaf)
        total += loss.detach().to(torch.float32)
        auxes.append(tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in aux))
        if c is None:
            continue
        rs = (c.reshape(-1) * -lin.inv_t).contiguous()
        off = 0
        for piece in pieces:
            n = _segments_rows(piece)
            logits = buf[:n]
            if len(pieces) > 1:  # the buffer holds the last piece only: recompute
                lin.logits(logits, piece)
            ce.cross_entropy_fwd_inplace(logits, _gather(tgt, piece), None, denom, rs[off:off + n], ignore_index,
                                         0.0, 0.0, ce.REDUCTIONS["none"], 0.0, False, False, False)
            lin.accumulate(logits, piece)
            off += n
    if not groups and check is not None:
        check()
    return total, auxes


def sub_rows(bt: int, v: int, elem_bytes: int, temp_bytes_per_row: int, chunk: int) -> int:
    """Rows per sub-block of a chunk whose loss is computed with ``temp_bytes_per_row``
    of fp32 temporaries per row: within BUDGET_SHARE of the full logits (and BUDGET_MAX_BYTES), but
    at least SUB_MIN_ROWS (fewer rows would make the chunk math launch-bound), at most the chunk."""
    budget = min(BUDGET_SHARE * bt * v * elem_bytes, BUDGET_MAX_BYTES)
    n = int(budget // max(temp_bytes_per_row, 1))
    return max(1, min(chunk, max(n, SUB_MIN_ROWS)))


def logits_sweep(op: str, lins: Sequence[Linear], rows: int, chunk: int, chunk_loss, sub: Optional[int] = None) -> list:
    """Token chunks of ``rows``: per chunk, each linear's logits (raw: x @ W.T + b, temperature
    1) into its own buffer; then, per sub-block of ``sub`` rows of the chunk (default: all of it),
    ``chunk_loss(r0, r1, logits_list)`` returns (loss, aux, dlogits or None) with dlogits w.r.t. the
    first linear's raw logits (fp32 or the buffer's dtype), written over that sub-block's rows of
    the first buffer (or already written there: dlogits is then logits_list[0] itself, the object
    it was given); the chunk's d logits then go into lins[0]'s gradients. Returns the list of
    (loss, aux) per sub-block."""
    out = []
    if rows == 0:
        return out
    sub = sub or chunk
    bufs = [torch.empty((min(chunk, rows), lin.V), dtype=lin.x.dtype, device=lin.x.device) for lin in lins]
    for r0 in range(0, rows, chunk):
        r1 = min(r0 + chunk, rows)
        views = []
        for lin, buf in zip(lins, bufs):
            v = buf[:r1 - r0]
            lin.logits(v, [(r0, r1)])
            views.append(v)
        grads = lins[0].wants_grads
        for s0 in range(0, r1 - r0, sub):
            s1 = min(s0 + sub, r1 - r0)
            block = [v[s0:s1] for v in views]
            loss, aux, dlogits = chunk_loss(r0 + s0, r0 + s1, block)
            out.append((loss, aux))
            if grads:
                if dlogits is None:
                    block[0].zero_()
                elif dlogits is not block[0]:  # block[0] itself: written there already
                    block[0].copy_(dlogits)  # the sub-block's rows only: later ones are unread yet
        if grads:
            lins[0].accumulate(views[0], [(r0, r1)])
    return out


class FusedLinearLoss(torch.autograd.Function):
    """Gradients computed in the forward (by ``run``), scaled by the upstream gradient in the
    backward: ``apply(x, W, b, run)`` where ``run()`` returns (loss, dx, dW, db)."""

    @staticmethod
    def forward(ctx, x, W, b, run):
        loss, dx, dW, db = run()
        ctx.save_for_backward(dx, dW, db)
        return loss

    @staticmethod
    def backward(ctx, dloss):
        dx, dW, db = ctx.saved_tensors
        if dloss is None:
            return None, None, None, None
        for g in (dx, dW, db):  # in place, skipped on the device when dloss is exactly 1.0
            if g is not None:
                ce.scale_(g, dloss)
        return dx, dW, db, None


def needs(x, W, b) -> Tuple[bool, bool, bool]:
    on = torch.is_grad_enabled()
    return (on and x.requires_grad, on and W.requires_grad, on and b is not None and b.requires_grad)
