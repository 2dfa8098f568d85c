#!/usr/bin/env python3
"""GRPO on a small causal LM with ligerd's chunked RL loss (``ligerd.chunked_loss.
LigerFusedLinearGRPOLoss``, Liger-Kernel 0.8.5's API) the way TRL's GRPOTrainer calls it with
``use_liger_kernel``: the loss takes the completions' hidden states and the LM head's weight, the
sampled token ids, their mask and the advantages, and never materialises the logits.

What it does
  1. Model: a random-init ``transformers.LlamaForCausalLM`` (``--size``, ``--vocab``) and a frozen
     copy as the reference model.
  2. Rollouts, per step: ``--prompts`` random prompts, ``--group`` completions each, sampled with
     ``model.generate`` (temperature 1, up to ``--completion-len`` tokens; after an end-of-sequence
     token the mask is 0). Reward, a toy rule: the share of a completion's tokens in the lower half
     of the vocabulary. Advantages: each reward minus its group's mean, over the group's std.
  3. Log-probs the loss needs, without logits: the reference model's per-token log-probs, and with
     ``--iterations`` > 1 the sampling policy's ("old"), by ``ligerd.chunked_loss.
     fused_linear_selected_log_probs`` on hidden states (no gradient).
  4. ``--iterations`` AdamW steps on each rollout batch with the fused loss (``--loss-type`` grpo,
     bnpo, dr_grpo or dapo; beta 0.04 KL to the reference; clip 0.2); per step the mean reward, the
     loss, the KL and the clip ratio, and on a GPU the step's peak memory.
  5. One-step check: on the last batch (old log-probs from before its updates, so the importance
     ratios are not 1), the fused loss and the same loss written unfused in torch (full logits,
     fp32 log-softmax, autograd; ``unfused_loss`` below) give the same loss, metrics and
     gradients (d hidden, d lm_head.weight), compared with float64 as tests/gpu/
     test_chunked_loss.py does; peak memory of both. A mismatch exits 1.

Where it runs (see examples/_chunked_common.py): on a GPU, ligerd's kernels (``--dispatch``; a
private ligerd daemon is started when none is running); on the CPU, ligerd's chunked-loss code
with its float64 reference executor in place of the CUDA kernels (what the CPU test suite does):
it proves the example and the loss agree with torch, not speed or memory.

    PYTHONPATH=build/release/python LIGERD_BIN=build/release/server/ligerd python3 examples/grpo_step.py
    PYTHONPATH=python_client python3 examples/grpo_step.py --device cpu --steps 2

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

# The loss types whose objective unfused_loss writes out (the clipped PPO objective with its
# normalisers); ligerd and Liger also offer cispo, sapo, luspo and vespo.
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
EOS = 2
PAD = 0
BETA, EPS = 0.04, 0.2


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="grpo_step.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(ap)
    ap.add_argument("--loss-type", choices=LOSS_TYPES, default="dapo", help="GRPO normaliser (default dapo)")
    ap.add_argument("--prompts", type=int, default=None, help="prompts per step (default 4 cuda, 2 cpu)")
    ap.add_argument("--group", type=int, default=4, help="completions per prompt (default 4)")
    ap.add_argument("--prompt-len", type=int, default=None, help="prompt tokens (default 32 cuda, 4 cpu)")
    ap.add_argument("--completion-len", type=int, default=None,
                    help="most tokens generated per completion (default 128 cuda, 6 cpu)")
    ap.add_argument("--iterations", type=int, default=2,
                    help="optimizer steps per rollout batch (TRL's num_iterations; default 2)")
    args = C.finish_args(ap.parse_args(argv), ap)
    on_cuda = args.device == "cuda"
    args.prompts = args.prompts or (4 if on_cuda else 2)
    args.prompt_len = args.prompt_len or (32 if on_cuda else 4)
    args.completion_len = args.completion_len or (128 if on_cuda else 6)
    args.lr = args.lr or 1e-3
    for name in ("prompts", "group", "prompt_len", "completion_len", "iterations"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.group < 2:
        ap.error("--group must be at least 2 (advantages are relative to the group)")
    return args


# ---------------------------------------------------------------------------------------------
# Rollouts

@torch.no_grad()
def rollout(args, model, g: torch.Generator):
    """(prompt + completion ids, attention mask, completion ids, completion mask, rewards,
    advantages) for prompts x group sampled completions."""
    dev, P, V = args.device, args.prompt_len, args.vocab
    prompts = torch.randint(3, V, (args.prompts, P), generator=g).to(dev)
    prompts = prompts.repeat_interleave(args.group, dim=0)
    model.eval()
    torch.manual_seed(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=g)))
    full = model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), do_sample=True,
                          temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=args.completion_len,
                          min_new_tokens=1, pad_token_id=PAD, eos_token_id=EOS)
    model.train()
    comp = full[:, P:]
    # Tokens up to and including the first end-of-sequence count; what follows is padding.
    is_eos = comp == EOS
    after = (is_eos.cumsum(1) - is_eos.long()) > 0
    cmask = (~after).long()
    reward = ((comp < V // 2) & ~after).sum(1).float() / cmask.sum(1).clamp(min=1)
    r = reward.view(args.prompts, args.group)
    adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).view(-1)
    attn = torch.cat([torch.ones_like(prompts), cmask], 1)
    return full, attn, comp, cmask, reward, adv


def completion_hidden(args, model, full, attn):
    """Hidden states at the positions that predict the completion tokens."""
    P = args.prompt_len
    return C.last_hidden(model, full, attn)[:, P - 1:-1]


# ---------------------------------------------------------------------------------------------
# The unfused loss

def unfused_loss(args, x, W, ids, mask, adv, ref_lp, old_lp):
    """GRPO's clipped objective (Shao et al. 2024) on the full logits, token-level importance
    ratios, k3 KL to the reference, reduced by the loss type's normaliser as Liger-Kernel 0.8.5
    does; returns (loss, (kl mean, clip ratio))."""
    z = x @ W.t()
    z = z.float() if z.dtype in (torch.bfloat16, torch.float16) else z
    lp = F.log_softmax(z, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    m = mask.to(lp.dtype)
    ref = ref_lp.to(lp.dtype)
    old = old_lp.to(lp.dtype) if old_lp is not None else lp.detach()
    A = adv.to(lp.dtype)[:, None]
    w = torch.exp(lp - old)
    per = -torch.minimum(w * A, torch.clamp(w, 1 - EPS, 1 + EPS) * A)
    kl = torch.exp(ref - lp) - (ref - lp) - 1
    per = per + BETA * kl
    B = x.shape[0]
    tokens = m.sum().clamp(min=1)
    if args.loss_type == "grpo":
        loss = ((per * m).sum(-1) / m.sum(-1).clamp(min=1)).sum() / B
    elif args.loss_type == "dr_grpo":
        loss = (per * m).sum() / (B * args.completion_len)
    else:   # bnpo and dapo (dapo's normaliser is the batch's token count without num_items_in_batch)
        loss = (per * m).sum() / tokens
    clipped = ((w < 1 - EPS) & (A < 0)) | ((w > 1 + EPS) & (A > 0))
    return loss, ((kl * m).sum() / tokens, (clipped.to(lp.dtype) * m).sum() / tokens)


# ---------------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    C.import_ligerd_or_exit()
    print(C.setup(args))
    from ligerd.chunked_loss import LigerFusedLinearGRPOLoss, fused_linear_selected_log_probs
    dev, dtype = args.device, args.dtype
    model = C.tiny_llama(args.size, args.vocab, dtype, dev, args.seed)
    ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    loss_fn = LigerFusedLinearGRPOLoss(beta=BETA, epsilon_low=EPS, epsilon_high=EPS, loss_type=args.loss_type,
                                       max_completion_length=args.completion_len, use_ref_model=True)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"model: LlamaForCausalLM {args.size} ({n:.2f}M parameters, vocab {args.vocab}, {dtype}); GRPO "
          f"({args.loss_type}, beta {BETA}, clip {EPS}), {args.prompts} prompts x {args.group} completions of "
          f"<= {args.completion_len} tokens, {args.iterations} updates per batch, {args.steps} batches")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed)

    def logps(m, full, attn, comp):
        with torch.no_grad():
            return fused_linear_selected_log_probs(completion_hidden(args, m, full, attn), m.lm_head.weight, comp)

    t0 = time.perf_counter()
    for step in range(args.steps):
        full, attn, comp, cmask, reward, adv = rollout(args, model, g)
        ref_lp = logps(ref_model, full, attn, comp)
        old_lp = logps(model, full, attn, comp) if args.iterations > 1 else None
        for it in range(args.iterations):
            if dev == "cuda":
                torch.cuda.reset_peak_memory_stats()
            hidden = completion_hidden(args, model, full, attn)
            loss, metrics = loss_fn(hidden, model.lm_head.weight, comp, cmask, adv,
                                    ref_per_token_logps=ref_lp, old_per_token_logps=old_lp)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not torch.isfinite(loss.detach()).item():
                print(f"step {step + 1}: loss is not finite", file=sys.stderr)
                return 1
            mem = f"  peak {torch.cuda.max_memory_allocated() / 2 ** 20:.0f} MiB" if dev == "cuda" else ""
            print(f"batch {step + 1:3d}/{args.steps} update {it + 1}  reward {reward.mean().item():.3f}  "
                  f"loss {loss.item():+.4f}  kl {metrics[0].item():.5f}  clip ratio {metrics[-1].item():.3f}{mem}")
    if dev == "cuda":
        torch.cuda.synchronize()
    print(f"trained {args.steps * args.iterations} updates in {time.perf_counter() - t0:.1f} s; "
          f"{C.dispatch_line(args)}")

    # One more step on the last batch, fused vs unfused: the policy has moved since the rollout,
    # so the importance ratios against the sampling policy's log-probs are not 1.
    if old_lp is None:
        old_lp = ref_lp.clone()  # one update per batch: any earlier policy serves as "old"
    model.eval()
    with torch.no_grad():
        h = completion_hidden(args, model, full, attn)
    ok = C.check_one_step(
        f"grpo ({args.loss_type})",
        lambda x, W: loss_fn(x, W, comp, cmask, adv, ref_per_token_logps=ref_lp, old_per_token_logps=old_lp),
        lambda x, W: unfused_loss(args, x, W, comp, cmask, adv, ref_lp, old_lp),
        [h, model.lm_head.weight.detach()], ["hidden", "lm_head.weight"], dtype, dev, args.vocab,
        out_names=("loss", "kl", "clip_ratio"))
    print(f"one-step check: {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
