"""The paired-preference driver (Liger-Kernel's LigerFusedLinearPreferenceBase semantics) on the
chunk loop of ``_engine``: the batch is the chosen half followed by the rejected half, pair i is
rows i and i + B/2. Per sequence the log-prob is the sum (or, with ``average_log_prob``, the mean)
of its non-ignored tokens' log-probs; the loss is

    alpha * NLL(chosen) + preference_loss(chosen_logps, rejected_logps[, ref logps])

where NLL is the summed token NLL of the chosen half over its non-ignored count (of ``nll_target``
when given, else of ``target``). Returned as Liger does: (loss, (chosen_logps, rejected_logps,
chosen_logits_mean, rejected_logits_mean, nll_loss, *the preference loss's own outputs)), the
scalar outputs summed over pairs, the per-pair ones concatenated."""

from __future__ import annotations

from typing import Callable

import torch

from ligerd.chunked_loss import _engine as E


def _logits_row_sums(lin: E.Linear, chunk: int) -> torch.Tensor:
    """sum_v (x W.T + b)[r, v] per row without the logits: x @ colsum(W) + sum(b), in fp32."""
    wsum = lin.W.sum(dim=0, dtype=torch.float32)
    bsum = lin.b.sum(dtype=torch.float32) if lin.b is not None else 0.0
    rows = lin.x.shape[0]
    out = torch.empty(rows, dtype=torch.float32, device=lin.x.device)
    for r0 in range(0, rows, chunk):
        r1 = min(r0 + chunk, rows)
        out[r0:r1] = lin.x[r0:r1].to(torch.float32) @ wsum + bsum
    return out


def _seq_logps(lp: torch.Tensor, mask: torch.Tensor, average: bool) -> torch.Tensor:
    s = (lp * mask).sum(-1)
    return s / mask.sum(-1) if average else s


@torch.compiler.disable
def run(op: str, preference_fn: Callable, x, W, target, bias=None, *, ignore_index=-100, alpha=1.0, beta=0.1,
        compute_nll_loss=True, nll_target=None, use_ref_model=False, ref_input=None, ref_weight=None,
        ref_bias=None, average_log_prob=True, **loss_kwargs):
    """The public forward of every paired loss: checks, then FusedLinearLoss.apply."""
    E.check_linear(op, x, W, bias)
    if x.dim() != 3:
        E.fail(op, f"input must be (batch, seq_len, hidden), got shape {tuple(x.shape)}")
    B, T, _ = x.shape
    if B % 2:
        E.fail(op, f"the batch holds the chosen half then the rejected half: its size must be even, got {B}")
    tgt = E.check_index(op, "target", target, (B, T), x.device)
    ntgt = E.check_index(op, "nll_target", nll_target, (B, T), x.device) if nll_target is not None else None
    if use_ref_model:
        if ref_input is None or ref_weight is None:
            E.fail(op, "use_ref_model=True needs ref_input and ref_weight")
        E.check_linear(op, ref_input, ref_weight, ref_bias, "ref_input", "ref_weight", "ref_bias")
        if tuple(ref_input.shape[:2]) != (B, T):
            E.fail(op, f"ref_input has shape {tuple(ref_input.shape)}, expected ({B}, {T}, H)")
    need = E.needs(x, W, bias)

    def go():
        return _forward(op, preference_fn, x, W, bias, tgt, ntgt, B, T, need, ignore_index, float(alpha),
                        beta, bool(compute_nll_loss), use_ref_model, ref_input, ref_weight, ref_bias,
                        bool(average_log_prob), loss_kwargs, out)

    out = {}
    loss = E.FusedLinearLoss.apply(x, W, bias, go)
    return loss, out["aux"]


def _forward(op, preference_fn, x, W, bias, tgt, ntgt, B, T, need, ignore_index, alpha, beta, compute_nll,
             use_ref, ref_input, ref_weight, ref_bias, average, loss_kwargs, out):
    n = B // 2
    lin = E.Linear(x.detach(), W.detach(), bias.detach() if bias is not None else None, 1.0, *need)
    V = lin.V
    C = E.group_chunk_rows(op, B * T, V, x.element_size(), 2 * T)
    denom, check = E.target_denom(op, tgt, V, ignore_index)
    mask = (tgt != ignore_index).view(B, T)
    nll_count = ((ntgt if ntgt is not None else tgt).view(B, T)[:n] != ignore_index).sum()

    ref_seq = None
    if use_ref:
        rlin = E.Linear(ref_input.detach(), ref_weight.detach(),
                        ref_bias.detach() if ref_bias is not None else None)
        rC = E.chunk_rows(op, B * T, rlin.V, ref_input.element_size())
        ref_lp = E.selected_logps(op, rlin, tgt, ignore_index, rC, denom=denom).view(B, T)
        ref_seq = _seq_logps(ref_lp, mask, average)

    nll_in_sweep = compute_nll and ntgt is None
    pairs = max(1, C // (2 * T)) if T else max(n, 1)
    groups = [[(a, min(a + pairs, n)), (n + a, n + min(a + pairs, n))] for a in range(0, n, pairs)]

    def group_loss(ranges, lp):
        (a, b), _ = ranges
        k = b - a
        m = torch.cat([mask[a:b], mask[n + a:n + b]])
        seq = _seq_logps(lp, m, average)
        chosen, rejected = seq[:k], seq[k:]
        nll = torch.zeros((), dtype=torch.float32, device=lp.device)
        if nll_in_sweep:
            nll = -(lp[:k] * m[:k]).sum() / nll_count
        kw = dict(loss_kwargs)
        if ref_seq is not None:
            kw["ref_chosen_logps"] = ref_seq[a:b]
            kw["ref_rejected_logps"] = ref_seq[n + a:n + b]
        pref = preference_fn(chosen, rejected, n, beta=beta, **kw)
        pref_loss, extra = (pref[0], tuple(pref[1:])) if isinstance(pref, tuple) else (pref, ())
        return alpha * nll + pref_loss, (chosen, rejected, nll) + extra

    total, auxes = E.selected_sweep(op, lin, tgt, T, groups, group_loss, ignore_index, C, denom, check)

    nll_loss = torch.zeros((), dtype=torch.float32, device=x.device)
    if compute_nll and ntgt is not None:
        # NLL on nll_target: its gradient does not depend on the preference term, so one more pass
        # over the chosen rows computes its value and adds alpha/N * (softmax - onehot).
        nll_loss = _nll_pass(op, lin, ntgt, n * T, nll_count, alpha, ignore_index, C)
        total = total + alpha * nll_loss
    elif auxes:
        nll_loss = torch.stack([a[2] for a in auxes]).sum()

    sums = _logits_row_sums(lin, C)
    scale = float(n * T * V) if n * T * V else 1.0
    chosen_mean = sums[:n * T].sum() / scale
    rejected_mean = sums[n * T:].sum() / scale
    chosen = torch.cat([a[0] for a in auxes]) if auxes else torch.zeros(0, device=x.device)
    rejected = torch.cat([a[1] for a in auxes]) if auxes else torch.zeros(0, device=x.device)
    extras = []
    for i in range(3, len(auxes[0]) if auxes else 3):
        vals = [a[i] for a in auxes]
        extras.append(torch.stack(vals).sum() if vals[0].dim() == 0 else torch.cat(vals))
    out["aux"] = (chosen, rejected, chosen_mean, rejected_mean, nll_loss, *extras)
    dx, dW, db = lin.grads()
    return total, dx, dW, db


def _nll_pass(op, lin, ntgt, rows, count, alpha, ignore_index, C):
    denom, check = E.target_denom(op, ntgt, lin.V, ignore_index)
    dev = lin.x.device
    total = torch.zeros((), dtype=torch.float32, device=dev)
    if rows == 0:
        check()
        return total
    inv = 1.0 / count.clamp(min=1).to(torch.float32)  # a zero count means every row is ignored
    rs = (alpha * inv).expand(min(C, rows)).contiguous()
    buf = torch.empty((min(C, rows), lin.V), dtype=lin.x.dtype, device=dev)
    first = True
    for r0 in range(0, rows, C):
        r1 = min(r0 + C, rows)
        logits = buf[:r1 - r0]
        lin.logits(logits, [(r0, r1)])
        if lin.wants_grads:
            loss_rows, _, _ = E.ce.cross_entropy_fwd_inplace(
                logits, ntgt[r0:r1], None, denom, rs[:r1 - r0], ignore_index, 0.0, 0.0,
                E.ce.REDUCTIONS["none"], 0.0, False, False, False)
            lin.accumulate(logits, [(r0, r1)], add_dx=True)
        else:
            loss_rows, _, _, _ = E.ce.cross_entropy_fwd(logits, ntgt[r0:r1], None, denom, ignore_index, 0.0, 0.0,
                                                       E.ce.REDUCTIONS["none"], 0.0, False, False, False, False)
        if first:
            check()
            first = False
        total += loss_rows.sum()
    return total / count.to(torch.float32)
