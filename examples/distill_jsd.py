#!/usr/bin/env python3
"""Knowledge distillation from a wider teacher into a small student with ligerd's chunked
distillation loss (``ligerd.chunked_loss.LigerFusedLinearJSDLoss``, Liger-Kernel 0.8.5's API):
the loss takes both models' last hidden states and LM head weights, so neither model's
[tokens, vocabulary] logits are ever materialised.

What it does
  1. Models: two random-init ``transformers.LlamaForCausalLM`` sharing one vocabulary: the
     teacher ``--teacher-scale`` times wider (hidden, heads, FFN) than the student (``--size``).
  2. Teacher: ``--teacher-steps`` AdamW steps of plain next-token cross-entropy (transformers' own
     loss) on synthetic text: sequences that count up from a random token with a few random
     tokens mixed in, so it has something to pass on. Then frozen.
  3. Distillation: ``--steps`` AdamW steps of the student with
     loss = w_hard * CE(student, labels) + w_soft * JSD_beta(student / T, teacher / T)
     (``--beta``, ``--temperature``, ``--weight-soft``; ``--loss cosine`` for
     ``LigerFusedLinearCosineSimilarityLoss`` instead), printing the loss, its soft (JSD) and hard
     (cross-entropy) parts (``return_soft_hard_loss=True``) and on a GPU the step's peak memory.
  4. One-step check: on a fresh batch, the fused loss and the same loss written unfused in torch
     (both heads' full logits, fp32 softmax, autograd; ``unfused_loss`` below) give the same loss,
     soft and hard parts and gradients (d student hidden, d student lm_head.weight), compared with
     float64 as tests/gpu/test_chunked_loss.py does; peak memory of both. A mismatch exits 1.

Where it runs (see examples/_chunked_common.py): on a GPU, ligerd's kernels (``--dispatch``; a
private ligerd daemon is started when none is running); on the CPU, ligerd's chunked-loss code
with its float64 reference executor in place of the CUDA kernels (what the CPU test suite does):
it proves the example and the loss agree with torch, not speed or memory.

    PYTHONPATH=build/release/python LIGERD_BIN=build/release/server/ligerd python3 examples/distill_jsd.py
    PYTHONPATH=python_client python3 examples/distill_jsd.py --device cpu --steps 3

Exit status: 0 when the check passed and training finished, 1 when the check failed, 2 on bad
arguments or when ligerd cannot be imported.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

import _chunked_common as C

IGNORE = -100


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="distill_jsd.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(ap)
    ap.add_argument("--loss", choices=("jsd", "cosine"), default="jsd", help="soft loss (default jsd)")
    ap.add_argument("--teacher-scale", type=int, default=2, help="teacher width / student width (default 2)")
    ap.add_argument("--teacher-steps", type=int, default=None,
                    help="teacher cross-entropy steps before distilling (default 30 cuda, 5 cpu)")
    ap.add_argument("--beta", type=float, default=0.5,
                    help="JSD's weight on the teacher (0: KL(teacher||student), 1: KL(student||teacher)); "
                         "cosine's scale (default 0.5)")
    ap.add_argument("--temperature", type=float, default=2.0, help="softmax temperature (default 2)")
    ap.add_argument("--weight-soft", type=float, default=0.5,
                    help="w_soft; w_hard = 1 - w_soft (default 0.5)")
    ap.add_argument("--batch", type=int, default=None, help="sequences per step (default 8 cuda, 4 cpu)")
    ap.add_argument("--seq", type=int, default=None, help="tokens per sequence (default 256 cuda, 12 cpu)")
    args = C.finish_args(ap.parse_args(argv), ap)
    on_cuda = args.device == "cuda"
    args.teacher_steps = args.teacher_steps if args.teacher_steps is not None else (30 if on_cuda else 5)
    args.batch = args.batch or (8 if on_cuda else 4)
    args.seq = args.seq or (256 if on_cuda else 12)
    args.lr = args.lr or 1e-3
    if not 0.0 <= args.beta <= 1.0:
        ap.error("--beta must be in [0, 1]")
    if not 0.0 <= args.weight_soft <= 1.0:
        ap.error("--weight-soft must be in [0, 1]")
    if args.temperature <= 0:
        ap.error("--temperature must be positive")
    for name in ("teacher_scale", "batch", "seq"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.seq < 2:
        ap.error("--seq must be at least 2")
    return args


def make_batch(args, g: torch.Generator):
    """(input_ids, labels): sequences counting up from a random token (mod the vocabulary, above
    the 3 special ids), one token in 8 replaced by a random one; labels are the next tokens
    (shifted), the last position -100."""
    B, L, V = args.batch, args.seq, args.vocab
    start = torch.randint(3, V, (B, 1), generator=g)
    ids = (start - 3 + torch.arange(L)) % (V - 3) + 3
    noise = torch.rand(B, L, generator=g) < 0.125
    ids = torch.where(noise, torch.randint(3, V, (B, L), generator=g), ids)
    labels = torch.full_like(ids, IGNORE)
    labels[:, :-1] = ids[:, 1:]
    return ids, labels


def fused_loss(args):
    from ligerd.chunked_loss import LigerFusedLinearCosineSimilarityLoss, LigerFusedLinearJSDLoss
    cls = LigerFusedLinearJSDLoss if args.loss == "jsd" else LigerFusedLinearCosineSimilarityLoss
    return cls(weight_hard_loss=1.0 - args.weight_soft, weight_soft_loss=args.weight_soft, beta=args.beta,
               temperature=args.temperature, return_soft_hard_loss=True)


def _logits(x, W):
    z = x @ W.t()                                    # the whole [tokens, V] logits
    return z.float() if z.dtype in (torch.bfloat16, torch.float16) else z


def _jsd_rows(s_lp, t_lp, beta):
    """Generalised JSD per row: beta KL(t || M) + (1 - beta) KL(s || M), M = beta t + (1 - beta) s
    (beta 0: KL(t || s), beta 1: KL(s || t)), as Liger-Kernel 0.8.5 defines it."""
    if beta == 0:
        return (t_lp.exp() * (t_lp - s_lp)).sum(-1)
    if beta == 1:
        return (s_lp.exp() * (s_lp - t_lp)).sum(-1)
    log_m = torch.logaddexp(t_lp + math.log(beta), s_lp + math.log(1 - beta))
    return beta * (t_lp.exp() * (t_lp - log_m)).sum(-1) + (1 - beta) * (s_lp.exp() * (s_lp - log_m)).sum(-1)


def unfused_loss(args, sx, sW, tx, tW, y):
    """The same loss in torch on both heads' full logits: hard = cross-entropy of the untempered
    student logits, soft = JSD (or beta (1 - cos)) of the tempered ones, both summed over the
    labelled tokens / their count; returns (loss, soft, hard) like return_soft_hard_loss=True."""
    s = _logits(sx, sW)
    with torch.no_grad():
        t = _logits(tx, tW)
    valid = y != IGNORE
    n = valid.sum().clamp(min=1)
    hard = F.cross_entropy(s, y, ignore_index=IGNORE, reduction="sum") / n
    ss, ts = s / args.temperature, t / args.temperature
    if args.loss == "jsd":
        rows = _jsd_rows(F.log_softmax(ss, -1), F.log_softmax(ts, -1), args.beta)
    else:
        rows = args.beta * (1 - F.cosine_similarity(ss, ts, dim=-1, eps=0.0))
    soft = (rows * valid).sum() / n
    return (1.0 - args.weight_soft) * hard + args.weight_soft * soft, soft, hard


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    C.import_ligerd_or_exit()
    print(C.setup(args))
    dev, dtype = args.device, args.dtype
    student = C.tiny_llama(args.size, args.vocab, dtype, dev, args.seed)
    teacher = C.tiny_llama(args.size, args.vocab, dtype, dev, args.seed + 1, scale=args.teacher_scale)
    count = lambda m: sum(p.numel() for p in m.parameters()) / 1e6
    loss_fn = fused_loss(args)
    print(f"student: LlamaForCausalLM {args.size}, hidden {student.config.hidden_size} ({count(student):.2f}M); "
          f"teacher: hidden {teacher.config.hidden_size} ({count(teacher):.2f}M); vocab {args.vocab}, {dtype}; "
          f"{args.batch} x {args.seq} tokens per step")
    g = torch.Generator().manual_seed(args.seed)

    # 1. The teacher learns the synthetic text with transformers' own cross-entropy.
    opt = torch.optim.AdamW(teacher.parameters(), lr=args.lr, weight_decay=0.0)
    for step in range(args.teacher_steps):
        ids, _ = [t.to(dev) for t in make_batch(args, g)]
        loss = teacher(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step in (0, args.teacher_steps - 1):
            print(f"teacher step {step + 1:4d}/{args.teacher_steps}  cross-entropy {loss.item():.4f}")
    teacher.eval().requires_grad_(False)
    del opt

    # 2. The student distils with the fused loss.
    print(f"distilling with {type(loss_fn).__name__} (beta {args.beta}, temperature {args.temperature}, "
          f"w_soft {args.weight_soft}, w_hard {1 - args.weight_soft:g})")
    opt = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0)
    t0 = time.perf_counter()
    for step in range(args.steps):
        ids, labels = [t.to(dev) for t in make_batch(args, g)]
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            th = C.last_hidden(teacher, ids, None)
        sh = C.last_hidden(student, ids, None)
        H, Ht = sh.shape[-1], th.shape[-1]
        loss, soft, hard = loss_fn(sh.reshape(-1, H), student.lm_head.weight, th.reshape(-1, Ht),
                                   teacher.lm_head.weight, labels.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not torch.isfinite(loss.detach()).item():
            print(f"step {step + 1}: loss is not finite", file=sys.stderr)
            return 1
        mem = f"  peak {torch.cuda.max_memory_allocated() / 2 ** 20:.0f} MiB" if dev == "cuda" else ""
        print(f"step {step + 1:4d}/{args.steps}  loss {loss.item():.4f}  soft ({args.loss}) {soft.item():.4f}  "
              f"hard (CE) {hard.item():.4f}{mem}")
    if dev == "cuda":
        torch.cuda.synchronize()
    print(f"distilled {args.steps} steps in {time.perf_counter() - t0:.1f} s; {C.dispatch_line(args)}")

    # 3. One step of the fused loss against the unfused torch loss on a fresh batch.
    ids, labels = [t.to(dev) for t in make_batch(args, g)]
    student.eval()
    with torch.no_grad():
        sh = C.last_hidden(student, ids, None)
        th = C.last_hidden(teacher, ids, None)
    y = labels.reshape(-1)
    inputs = [sh.reshape(-1, sh.shape[-1]), student.lm_head.weight.detach(), th.reshape(-1, th.shape[-1]),
              teacher.lm_head.weight.detach()]
    ok = C.check_one_step(
        args.loss, lambda sx, sW, tx, tW: loss_fn(sx, sW, tx, tW, y),
        lambda sx, sW, tx, tW: unfused_loss(args, sx, sW, tx, tW, y), inputs,
        ["student hidden", "student lm_head.weight"], dtype, dev, args.vocab, out_names=("loss", "soft", "hard"))
    print(f"one-step check: {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
