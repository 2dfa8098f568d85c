"""Unchunked float64 references of ligerd.chunked_loss (and the fused linear JSD / KL-div), in plain
torch from the papers' formulas as Liger-Kernel 0.8.5 states them: the whole logits at once,
gradients by autograd. Shared by tests/python/test_chunked_loss_*.py (against the CPU reference
executor) and tests/gpu/test_chunked_loss.py. Every function takes tensors (upcast them to float64
and set requires_grad before calling) and returns (loss, aux tuple) like the loss it checks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def logits(x, W, b=None):
    """x @ W.T + b; half-precision logits are upcast to fp32 after the GEMM (as Liger and torch
    training code do), which makes these functions on bf16/fp16 inputs the GPU tests' yardstick."""
    z = x @ W.t()
    z = z + b if b is not None else z
    return z.float() if z.dtype in (torch.bfloat16, torch.float16) else z


def token_logps(x, W, b, target, ignore_index=-100, temperature=1.0):
    """log softmax(logits / T)[target] (0 where ignored) and the non-ignored mask."""
    lp = F.log_softmax(logits(x, W, b) / temperature, dim=-1)
    mask = target != ignore_index
    g = lp.gather(-1, torch.where(mask, target, 0).unsqueeze(-1)).squeeze(-1)
    return g * mask, mask


def seq_logps(x, W, b, target, ignore_index, average):
    lp, mask = token_logps(x, W, b, target, ignore_index)
    s = lp.sum(-1)
    return s / mask.sum(-1) if average else s


# ---- paired preference ------------------------------------------------------------------------

def _dpo_losses(c, r, cr, rr, beta, loss_type, ls, tau):
    """Per-pair DPO-family losses on log-ratios c' = cr, r' = rr (Rafailov et al. and successors)."""
    d = beta * (cr - rr)
    ls_ = F.logsigmoid
    if loss_type == "sigmoid":
        return -ls_(d)
    if loss_type == "hinge":
        return torch.clamp(1 - d, min=0)
    if loss_type == "exo_pair":
        qw, ql = torch.sigmoid(d), torch.sigmoid(-d)
        return qw * (ls_(d) - math.log(1 - ls)) + ql * (ls_(-d) - math.log(ls))
    if loss_type == "nca_pair":
        return -ls_(beta * cr) - 0.5 * ls_(-beta * cr) - 0.5 * ls_(-beta * rr)
    if loss_type == "robust":
        return ((1 - ls) * -ls_(d) - ls * -ls_(-d)) / (1 - 2 * ls)
    if loss_type == "bco_pair":
        return -ls_(beta * cr) - ls_(-beta * rr)
    if loss_type == "sppo_hard":
        return (cr - 1 / (2 * beta)) ** 2 + (rr + 1 / (2 * beta)) ** 2
    if loss_type == "apo_zero":
        return (1 - torch.sigmoid(beta * cr)) + torch.sigmoid(beta * rr)
    if loss_type == "apo_down":
        return torch.sigmoid(beta * cr) + (1 - torch.sigmoid(d))
    if loss_type == "discopop":
        m = torch.sigmoid(d / tau)
        return -ls_(d) * (1 - m) + torch.exp(-d) * m
    raise ValueError(loss_type)


def preference(kind, x, W, target, b=None, *, ignore_index=-100, beta=0.1, alpha=1.0, compute_nll_loss=True,
               nll_target=None, average_log_prob=True, ref=None, loss_type="sigmoid", label_smoothing=0.0,
               discopop_tau=0.05, gamma=0.5):
    """kind: dpo, orpo, cpo, simpo. ref: (ref_x, ref_W, ref_b) or None. Returns (loss, aux) in
    Liger's order: chosen/rejected logps, chosen/rejected logits means, nll, then the kind's own."""
    B, T, _ = x.shape
    n = B // 2
    V = W.shape[0]
    seq = seq_logps(x, W, b, target, ignore_index, average_log_prob)
    c, r = seq[:n], seq[n:]
    nll = torch.zeros((), dtype=seq.dtype, device=x.device)
    if compute_nll_loss:
        nt = nll_target if nll_target is not None else target
        lp, m = token_logps(x[:n], W, b, nt[:n], ignore_index)
        nll = -lp.sum() / m.sum()
    z = logits(x, W, b).detach()
    means = (z[:n].sum() / (n * T * V), z[n:].sum() / (n * T * V))
    if kind == "dpo":
        cref = rref = 0.0
        if ref is not None:
            with torch.no_grad():
                rs = seq_logps(*ref, target, ignore_index, average_log_prob)
            cref, rref = rs[:n], rs[n:]
        cr, rr = c - cref, r - rref
        pref = _dpo_losses(c, r, cr, rr, beta, loss_type, label_smoothing, discopop_tau).sum() / n
        extra = (beta * cr, beta * rr)
    elif kind == "orpo":
        odds = (c - r) - (torch.log(1 - torch.exp(c)) - torch.log(1 - torch.exp(r)))
        pref = -beta * F.logsigmoid(odds).sum() / n
        extra = (beta * c, beta * r, F.logsigmoid(odds).sum() / n, odds.sum() / n)
    else:
        zz = beta * (c - r) - (gamma if kind == "simpo" else 0.0)
        pref = ((1 - label_smoothing) * -F.logsigmoid(zz) + label_smoothing * -F.logsigmoid(-zz)).sum() / n
        extra = (beta * c, beta * r)
    loss = alpha * nll + pref
    return loss, (c, r, *means, nll, *extra)


# ---- KTO ----------------------------------------------------------------------------------------

def kto(x, W, target, labels, b=None, *, ignore_index=-100, beta=0.1, ref=None, kl=None, average_log_prob=False):
    B = x.shape[0]
    seq = seq_logps(x, W, b, target, ignore_index, average_log_prob)
    ratio = seq
    if ref is not None:
        with torch.no_grad():
            ref_seq = seq_logps(*ref, target, ignore_index, average_log_prob)
        ratio = seq - ref_seq
    sign = labels.to(x.dtype) * 2 - 1
    k = kl if kl is not None else 0.0
    loss = (1 - torch.sigmoid(beta * (ratio - k) * sign)).sum() / B
    z = logits(x, W, b).detach().sum((1, 2))
    lab = labels.to(x.dtype)
    rew = beta * ratio
    return loss, ((seq * lab).sum(), (seq * (1 - lab)).sum(), (z * lab).sum(), (z * (1 - lab)).sum(),
                  (rew * lab).sum(), (rew * (1 - lab)).sum())


# ---- GRPO ---------------------------------------------------------------------------------------

def grpo(x, W, ids, mask, adv, b=None, *, ref_logps=None, old_logps=None, ref=None, beta=0.04, epsilon_low=0.2,
         epsilon_high=0.2, loss_type="dapo", max_completion_length=None, importance_sampling_level="token",
         sapo_temperature_pos=1.0, sapo_temperature_neg=1.05, temperature=1.0, vllm_is_ratio=None, delta=None,
         use_bias_correction_kl=False, vespo=(2.0, 3.0, 3.0, 2.0), num_items_in_batch=None):
    """The GRPO family (Shao et al. 2024; DAPO, Dr. GRPO, BNPO, CISPO, SAPO, LUSPO, VESPO, GSPO's
    sequence-level ratio) written out per loss type on full logits."""
    B, T = ids.shape
    lp = F.log_softmax(logits(x, W, b) / temperature, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    m = mask.to(lp.dtype)
    if ref is not None and ref_logps is None:
        with torch.no_grad():
            ref_logps = F.log_softmax(logits(*ref) / temperature, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    refl = ref_logps.to(lp.dtype) if ref_logps is not None else lp.detach()
    old = old_logps.to(lp.dtype) if old_logps is not None else lp.detach()
    A = adv.to(lp.dtype)[:, None]
    isr = vllm_is_ratio
    if isr is not None:
        isr = isr.to(lp.dtype)
        isr = isr[:, None] if isr.dim() == 1 else isr
    lr = lp - old
    if importance_sampling_level == "token":
        logw = lr
    else:
        logw = ((lr * m).sum(-1) / m.sum(-1).clamp(min=1))[:, None]
    w = torch.exp(logw)
    zeros = torch.zeros_like(w, dtype=torch.bool)
    if loss_type == "cispo":
        per = -torch.clamp(w, max=epsilon_high).detach() * A * lp
        lower, upper = zeros, w > epsilon_high
    elif loss_type == "sapo":
        tau = torch.where(A > 0, sapo_temperature_pos, sapo_temperature_neg)
        per = -(4 / tau) * torch.sigmoid(tau * (w - 1)) * A
        lower = upper = zeros
    elif loss_type == "vespo":
        kp, lp_, kn, ln = vespo
        with torch.no_grad():
            s = (torch.clamp(lr, -20, 20) * m).sum(-1, keepdim=True)
            if isr is not None:
                s = s + torch.clamp(torch.log(isr), math.log(1e-8), 20).sum(-1, keepdim=True)
            lw = torch.clamp(s, math.log(1e-8), 20)
            k = torch.where(A >= 0, kp, kn)
            lam = torch.where(A >= 0, lp_, ln).clamp(min=1e-4)
            phi = torch.exp(lam + k * lw - lam * torch.exp(lw)).nan_to_num(0.0, 0.0, 0.0)
        per = -phi * A * lp
        lower = upper = zeros
    else:
        clipped = torch.clamp(w, 1 - epsilon_low, 1 + epsilon_high)
        w1 = torch.clamp(w, max=delta) if delta is not None else w
        per = -torch.minimum(w1 * A, clipped * A)
        lower, upper = w < 1 - epsilon_low, w > 1 + epsilon_high
    if isr is not None and loss_type != "vespo":
        per = per * isr
    kl = None
    if beta != 0:
        kl = torch.exp(refl - lp) - (refl - lp) - 1
        if use_bias_correction_kl:
            kl = kl * torch.exp(logw)
        per = per + beta * kl
    tokens = m.sum().clamp(min=1)
    if loss_type in ("grpo", "sapo"):
        loss = ((per * m).sum(-1) / m.sum(-1).clamp(min=1)).sum() / B
    elif loss_type == "bnpo":
        loss = (per * m).sum() / tokens
    elif loss_type == "dr_grpo":
        loss = (per * m).sum() / (B * max_completion_length)
    elif loss_type in ("dapo", "cispo", "vespo"):
        norm = float(num_items_in_batch) if num_items_in_batch is not None else m.sum()
        loss = (per * m).sum() / max(norm, 1.0) if isinstance(norm, float) else (per * m).sum() / norm.clamp(min=1)
    elif loss_type == "luspo":
        # Liger 0.8.5: every position (masked ones too) weighted by its sequence's length, over
        # B * per.shape[1]: with a sequence-level ratio and beta = 0 that is one term per sequence.
        weighted = per * m.sum(1, keepdim=True)
        loss = weighted.sum() / (B * weighted.shape[1])
    else:
        raise ValueError(loss_type)
    metrics = []
    if kl is not None:
        metrics.append((kl * m).sum() / tokens)
    clip = ((lower & (A < 0)) | (upper & (A > 0))).expand_as(m).to(lp.dtype)
    metrics.append((clip * m).sum() / tokens)
    return loss, tuple(metrics)


# ---- distillation ------------------------------------------------------------------------------

def jsd(s_lp, t_lp, beta):
    """Generalised JSD per row: beta KL(t || M) + (1-beta) KL(s || M), M = beta t + (1-beta) s;
    beta 0 is KL(t || s), beta 1 KL(s || t)."""
    if beta == 0:
        return (t_lp.exp() * (t_lp - s_lp)).sum(-1)
    if beta == 1:
        return (s_lp.exp() * (s_lp - t_lp)).sum(-1)
    M = beta * t_lp.exp() + (1 - beta) * s_lp.exp()
    logM = torch.log(M)
    return beta * (t_lp.exp() * (t_lp - logM)).sum(-1) + (1 - beta) * (s_lp.exp() * (s_lp - logM)).sum(-1)


def distillation(kind, sx, sW, tx, tW, y, sb=None, tb=None, *, weight_hard_loss=0.5, weight_soft_loss=0.5, beta=0.5,
                 ignore_index=-100, temperature=1.0):
    """kind: jsd or cosine. Returns (loss, (soft, hard))."""
    s = logits(sx, sW, sb)
    with torch.no_grad():
        t = logits(tx, tW, tb)
    valid = y != ignore_index
    n = valid.sum().clamp(min=1)
    hard = F.cross_entropy(s, y, ignore_index=ignore_index, reduction="sum") / n
    ss, ts = s / temperature, t / temperature
    if t.shape[-1] > s.shape[-1]:
        ss = torch.cat([ss, torch.zeros(ss.shape[0], t.shape[-1] - s.shape[-1], dtype=ss.dtype, device=ss.device)], -1)
    if kind == "jsd":
        rows = jsd(F.log_softmax(ss, -1), F.log_softmax(ts, -1), beta)
    else:
        rows = beta * (1 - (ss * ts).sum(-1) / (ss.norm(dim=-1) * ts.norm(dim=-1)))
    soft = (rows * valid).sum() / n
    return weight_hard_loss * hard + weight_soft_loss * soft, (soft, hard)


def fused_linear_jsd(sx, sW, tx, tW, labels=None, beta=0.5, ignore_index=-100, temperature=1.0):
    s_lp = F.log_softmax(logits(sx, sW) / temperature, -1)
    t_lp = F.log_softmax(logits(tx, tW).detach() / temperature, -1)
    valid = labels != ignore_index if labels is not None else torch.ones(sx.shape[0], dtype=torch.bool, device=sx.device)
    return (jsd(s_lp, t_lp, beta) * valid).sum() / valid.sum().clamp(min=1)


def fused_linear_kl_div(x, W, q, labels=None, reduction="batchmean", ignore_index=-100, temperature=1.0, eps=1e-10):
    lp = F.log_softmax(logits(x, W) / temperature, -1)
    valid = labels != ignore_index if labels is not None else torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    rows = (q * (torch.log(torch.clamp(q, min=eps)) - lp)).sum(-1) * valid
    n = int(valid.sum())
    if n == 0:
        return rows.sum() * 0
    if reduction == "batchmean":
        return rows.sum() / n
    if reduction == "mean":
        return rows.sum() / (n * W.shape[0])
    return rows.sum()


# ---- test helpers -------------------------------------------------------------------------------

def leaves(*ts, dtype=None):
    """Fresh leaf copies requiring grad (floating tensors only; None stays None)."""
    out = []
    for t in ts:
        if t is None or not t.is_floating_point():
            out.append(t)
        else:
            out.append(t.detach().to(dtype or t.dtype).clone().requires_grad_(True))
    return out


def flat(r):
    """Tensors of a nested (loss, (aux...)) result, in order."""
    if isinstance(r, torch.Tensor):
        return [r]
    out = []
    for e in r:
        out += flat(e)
    return out


def assert_close(name, got, want, rtol, atol):
    """got vs the float64 want, element-wise |got - want| <= atol * max(1, max|want|) + rtol |want|
    (NaN only where want is): the absolute part scales with the tensor's largest entry, since a
    gradient entry that is a sum of large cancelling terms keeps only the terms' fp32 precision."""
    got = got.detach().to(torch.float64).cpu()
    want = want.detach().to(torch.float64).cpu()
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.equal(torch.isnan(got), torch.isnan(want)), f"{name}: NaN where the reference has none"
    ok = ~torch.isnan(want)
    err = (got[ok] - want[ok]).abs()
    scale = max(1.0, float(want[ok].abs().max())) if want[ok].numel() else 1.0
    lim = atol * scale + rtol * want[ok].abs()
    if err.numel() and not bool((err <= lim).all()):
        i = int(torch.argmax(err - lim))
        raise AssertionError(f"{name}: max excess at flat index {i}: got {got[ok][i].item():.9g}, "
                             f"want {want[ok][i].item():.9g} (atol {atol}, rtol {rtol})")
