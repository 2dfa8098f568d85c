#!/usr/bin/env python3
"""Preference alignment of a small causal LM with ligerd's chunked losses (``ligerd.chunked_loss``,
Liger-Kernel 0.8.5's ``liger_kernel.chunked_loss`` API), the way TRL's ``use_liger_loss`` path
calls them: the loss gets the decoder's last hidden states and the LM head's weight, never the
logits, so the [tokens, vocabulary] logits are never materialised.

What it does
  1. Model: a random-init ``transformers.LlamaForCausalLM`` (``--size``: tiny = hidden 64, 2
     layers; small = hidden 512, 4 layers; ``--vocab``), and for DPO and KTO a frozen copy of it as
     the reference model.
  2. Data, synthetic: each pair shares a random prompt; the chosen completion counts up from the
     prompt's last token, the rejected one is random tokens; completions have random lengths
     (right-padded, labels -100 on the prompt and the padding). Batches are [chosen; rejected].
  3. Training: ``--steps`` AdamW steps with the fused loss; per step the loss, the mean reward
     margin (chosen - rejected rewards) and the reward accuracy, and on a GPU the step's peak memory.
  4. One-step check after training: on a fresh batch's hidden states, the fused ligerd loss and the same
     loss written unfused in torch (full logits, fp32 log-softmax, autograd; ``unfused_loss``
     below) give the same loss, aux outputs and gradients (d hidden, d lm_head.weight), each
     compared with float64 as tests/gpu/test_chunked_loss.py does; peak memory of both beside each
     other. A mismatch exits 1.

``--loss``: dpo (``LigerFusedLinearDPOLoss``, sigmoid, with the reference model), orpo, cpo, simpo
(reference-free), kto (``LigerFusedLinearKTOLoss``, unpaired: chosen rows labelled desirable,
rejected undesirable, with the reference model).

Where it runs (see examples/_chunked_common.py): on a GPU, ligerd's kernels, in the dispatch mode
``--dispatch`` asks for (a private ligerd daemon is started when none is running); on the CPU,
ligerd's chunked-loss code with its float64 reference executor in place of the CUDA kernels (what
the CPU test suite does): it proves the example and the loss agree with torch, not speed or memory.

    PYTHONPATH=build/release/python LIGERD_BIN=build/release/server/ligerd python3 examples/align_dpo.py
    PYTHONPATH=python_client python3 examples/align_dpo.py --device cpu --steps 3 --loss orpo

Exit status: 0 when the check passed and training finished, 1 when the check failed, 2 on bad
arguments or when ligerd cannot be imported.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

import _chunked_common as C

LOSSES = ("dpo", "orpo", "cpo", "simpo", "kto")
IGNORE = -100
# Aux outputs as Liger returns them (for the check's printout).
PAIRED_AUX = ("chosen_logps", "rejected_logps", "chosen_logits_mean", "rejected_logits_mean", "nll_loss",
              "chosen_rewards", "rejected_rewards")
ORPO_AUX = PAIRED_AUX + ("log_odds_ratio", "log_odds_chosen")
KTO_AUX = ("chosen_logps_sum", "rejected_logps_sum", "chosen_logits_sum", "rejected_logits_sum",
           "chosen_rewards_sum", "rejected_rewards_sum")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="align_dpo.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(ap)
    ap.add_argument("--loss", choices=LOSSES, default="dpo", help="preference loss (default dpo)")
    ap.add_argument("--beta", type=float, default=0.1, help="the loss's beta (default 0.1)")
    ap.add_argument("--pairs", type=int, default=4, help="chosen/rejected pairs per step (default 4)")
    ap.add_argument("--prompt-len", type=int, default=None, help="prompt tokens (default 64 cuda, 6 cpu)")
    ap.add_argument("--completion-len", type=int, default=None,
                    help="longest completion (default 192 cuda, 8 cpu); lengths are drawn from [half, this]")
    args = C.finish_args(ap.parse_args(argv), ap)
    on_cuda = args.device == "cuda"
    args.prompt_len = args.prompt_len or (64 if on_cuda else 6)
    args.completion_len = args.completion_len or (192 if on_cuda else 8)
    args.lr = args.lr or 1e-3
    for name in ("pairs", "prompt_len", "completion_len"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


# ---------------------------------------------------------------------------------------------
# Data

def make_batch(args, g: torch.Generator):
    """(input_ids, attention_mask, labels) of 2 * pairs sequences, chosen rows first; labels are
    the next token (shifted: labels[:, i] is what position i predicts), -100 outside completions."""
    n, P, Cmax, V = args.pairs, args.prompt_len, args.completion_len, args.vocab
    L = P + Cmax
    ids = torch.zeros(2 * n, L, dtype=torch.long)
    mask = torch.zeros(2 * n, L, dtype=torch.long)
    for i in range(n):
        prompt = torch.randint(3, V, (P,), generator=g)
        clen = int(torch.randint(max(1, Cmax // 2), Cmax + 1, (1,), generator=g))
        chosen = (prompt[-1] - 3 + 1 + torch.arange(clen)) % (V - 3) + 3   # counts up from the prompt
        rejected = torch.randint(3, V, (clen,), generator=g)
        for row, comp in ((i, chosen), (n + i, rejected)):
            ids[row, :P], ids[row, P:P + clen] = prompt, comp
            mask[row, :P + clen] = 1
    labels = ids[:, 1:].clone()
    labels[:, :P - 1] = IGNORE           # the prompt's tokens are not scored
    labels[mask[:, 1:] == 0] = IGNORE    # nor the padding
    return ids, mask, labels


# ---------------------------------------------------------------------------------------------
# The losses: fused (ligerd) and unfused (torch, full logits)

def fused_loss(args):
    from ligerd import chunked_loss as CL
    if args.loss == "dpo":
        return CL.LigerFusedLinearDPOLoss(beta=args.beta, use_ref_model=True)
    if args.loss == "orpo":
        return CL.LigerFusedLinearORPOLoss(beta=args.beta)
    if args.loss == "cpo":
        return CL.LigerFusedLinearCPOLoss(beta=args.beta)
    if args.loss == "simpo":
        return CL.LigerFusedLinearSimPOLoss(beta=args.beta)
    return CL.LigerFusedLinearKTOLoss(beta=args.beta, use_ref_model=True)


def call_fused(args, loss_fn, x, W, labels, rx=None, rW=None):
    """TRL's call: (lm_head.weight, hidden, labels, bias, ref hidden, ref lm_head.weight)."""
    if args.loss == "dpo":
        return loss_fn(W, x, labels, None, rx, rW)
    if args.loss == "kto":
        n = x.shape[0] // 2
        desirable = torch.arange(x.shape[0], device=x.device) < n
        return loss_fn(x, W, labels, None, desirable, rx, rW)
    return loss_fn(W, x, labels)


def _logps(z, y, average):
    """Per-sequence log-probs of the labels under logits z ([B, T, V], fp32 or fp64)."""
    lp = F.log_softmax(z, dim=-1)
    m = y != IGNORE
    tok = lp.gather(-1, torch.where(m, y, 0).unsqueeze(-1)).squeeze(-1) * m
    s = tok.sum(-1)
    return (s / m.sum(-1) if average else s), tok, m


def _full_logits(x, W):
    z = x @ W.t()                                      # the whole [B, T, V] logits
    return z.float() if z.dtype in (torch.bfloat16, torch.float16) else z


def unfused_loss(args, x, W, y, rx=None, rW=None):
    """The same losses written out in torch on the full logits (Rafailov et al. 2023 DPO; ORPO,
    Hong et al. 2024; CPO, Xu et al. 2024; SimPO, Meng et al. 2024; KTO, Ethayarajh et al. 2024),
    with Liger-Kernel 0.8.5's defaults and aux outputs, in the order ligerd returns them."""
    B, T, _ = x.shape
    n, V, beta = B // 2, W.shape[0], args.beta
    z = _full_logits(x, W)
    average = args.loss in ("orpo", "simpo")
    seq, tok, m = _logps(z, y, average)
    if args.loss == "kto":
        with torch.no_grad():
            ref = _logps(_full_logits(rx, rW), y, False)[0]
        lab = (torch.arange(B, device=x.device) < n).to(seq.dtype)
        ratio = seq - ref
        loss = (1 - torch.sigmoid(beta * ratio * (2 * lab - 1))).sum() / B
        zs = z.detach().sum((1, 2))
        rew = beta * ratio
        return loss, ((seq * lab).sum(), (seq * (1 - lab)).sum(), (zs * lab).sum(), (zs * (1 - lab)).sum(),
                      (rew * lab).sum(), (rew * (1 - lab)).sum())
    c, r = seq[:n], seq[n:]
    zd = z.detach()
    means = (zd[:n].sum() / (n * T * V), zd[n:].sum() / (n * T * V))
    with_nll = args.loss != "dpo"        # DPO's compute_nll_loss defaults to False, the others' True
    nll = -tok[:n].sum() / m[:n].sum() if with_nll else torch.zeros((), dtype=seq.dtype, device=x.device)
    if args.loss == "dpo":
        with torch.no_grad():
            ref = _logps(_full_logits(rx, rW), y, False)[0]
        cr, rr = c - ref[:n], r - ref[n:]
        return -F.logsigmoid(beta * (cr - rr)).sum() / n, (c, r, *means, nll, beta * cr, beta * rr)
    if args.loss == "orpo":
        odds = (c - r) - (torch.log1p(-torch.exp(c)) - torch.log1p(-torch.exp(r)))
        pref = -beta * F.logsigmoid(odds).sum() / n
        return nll + pref, (c, r, *means, nll, beta * c, beta * r, F.logsigmoid(odds).sum() / n, odds.sum() / n)
    margin = beta * (c - r) - (0.5 if args.loss == "simpo" else 0.0)   # SimPO's gamma = 0.5
    return nll - F.logsigmoid(margin).sum() / n, (c, r, *means, nll, beta * c, beta * r)


def rewards(args, aux):
    """(mean reward margin, reward accuracy) from the loss's aux outputs."""
    if args.loss == "kto":
        n = args.pairs
        return float(aux[4] / n - aux[5] / n), float("nan")
    cr, rr = aux[5].float(), aux[6].float()
    return float((cr - rr).mean()), float((cr > rr).float().mean())


# ---------------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    C.import_ligerd_or_exit()
    print(C.setup(args))
    dev, dtype = args.device, args.dtype
    model = C.tiny_llama(args.size, args.vocab, dtype, dev, args.seed)
    ref_model = None
    if args.loss in ("dpo", "kto"):
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    loss_fn = fused_loss(args)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"model: LlamaForCausalLM {args.size} ({nparams / 1e6:.2f}M parameters, vocab {args.vocab}, {dtype}), "
          f"loss {type(loss_fn).__name__} (beta {args.beta}), {args.pairs} pairs of "
          f"{args.prompt_len} + <= {args.completion_len} tokens, {args.steps} steps")

    g = torch.Generator().manual_seed(args.seed)

    def ref_hidden(ids, mask):
        if ref_model is None:
            return None
        with torch.no_grad():
            return C.last_hidden(ref_model, ids, mask)[:, :-1]

    # 1. Training with the fused loss.
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    model.train()
    t0 = time.perf_counter()
    for step in range(args.steps):
        ids, mask, labels = [t.to(dev) for t in make_batch(args, g)]
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        hidden = C.last_hidden(model, ids, mask)[:, :-1]
        rh = ref_hidden(ids, mask)
        out = call_fused(args, loss_fn, hidden, model.lm_head.weight, labels, rh,
                         ref_model.lm_head.weight if ref_model is not None else None)
        loss, aux = out
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        margin, acc = rewards(args, aux)
        if not torch.isfinite(loss.detach()).item():
            print(f"step {step + 1}: loss is not finite", file=sys.stderr)
            return 1
        mem = f"  peak {torch.cuda.max_memory_allocated() / 2 ** 20:.0f} MiB" if dev == "cuda" else ""
        accs = "" if acc != acc else f"  reward acc {acc:.2f}"
        print(f"step {step + 1:4d}/{args.steps}  loss {loss.item():.4f}  reward margin {margin:+.4f}{accs}{mem}")
    if dev == "cuda":
        torch.cuda.synchronize()
    print(f"trained {args.steps} steps in {time.perf_counter() - t0:.1f} s; {C.dispatch_line(args)}")

    # 2. One step of the fused loss against the unfused torch loss, on the trained model's hidden
    #    states for a fresh batch (after training, so that the policy differs from the reference).
    ids, mask, labels = [t.to(dev) for t in make_batch(args, g)]
    model.eval()
    with torch.no_grad():
        h0 = C.last_hidden(model, ids, mask)[:, :-1]
        rh0 = ref_hidden(ids, mask)
    W0 = model.lm_head.weight.detach()
    rW0 = ref_model.lm_head.weight.detach() if ref_model is not None else None
    inputs = [h0, W0] + ([rh0, rW0] if ref_model is not None else [])
    names = KTO_AUX if args.loss == "kto" else ORPO_AUX if args.loss == "orpo" else PAIRED_AUX
    ok = C.check_one_step(
        args.loss, lambda x, W, *r: call_fused(args, loss_fn, x, W, labels, *r),
        lambda x, W, *r: unfused_loss(args, x, W, labels, *r), inputs, ["hidden", "lm_head.weight"],
        dtype, dev, args.vocab, out_names=("loss",) + names)
    print(f"one-step check: {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
