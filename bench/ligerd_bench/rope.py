"""RoPE benchmark rows (run by bench/run_kernels.py --ops rope): forward, backward and forward+backward
of HF's apply_rotary_pos_emb for torch eager, torch.compile of the same, Liger-Kernel's
liger_rotary_pos_emb (if importable) and ligerd's liger_rotary_pos_emb (local dispatch).

Inputs are what a Llama attention layer hands RoPE: q and k as ``view(bsz, seq, heads, hd)
.transpose(1, 2)`` of projection outputs (non-leaf tensors, made once outside the timed step, so
no prologue is timed and the in-place ops are legal), cos/sin of batch bsz as HF's rotary
embedding returns them. Liger and ligerd rotate q, k (fwd) and dq, dk (bwd) in place, so values
rotate from step to step; the traffic does not change (rotations keep norms: nothing overflows).

Byte model (minimal traffic): read and write q and k, read cos and sin once:
fwd = bwd = 2*(Hq+Hk)*B*S*hd*b + 2*B*S*hd*b; full = fwd + bwd.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, List

import torch

from ligerd_bench import common
from ligerd_bench import harness

OP = "rope"
TITLE = "RoPE (q and k, HF rotate_half)"
PASSES = ("fwd", "bwd", "full")

LLAMA3_8B = {"B": 4, "S": 4096, "Hq": 32, "Hk": 8, "D": 128}


def shapes(quick: bool) -> List[dict]:
    if quick:
        return [dict(LLAMA3_8B)]
    return [dict(LLAMA3_8B),
            {"B": 1, "S": 16384, "Hq": 32, "Hk": 8, "D": 128},
            {"B": 4, "S": 4096, "Hq": 32, "Hk": 8, "D": 64},     # Llama-3.2-1B heads
            {"B": 2, "S": 4096, "Hq": 64, "Hk": 8, "D": 128}]    # 70B-style GQA


def bytes_moved(shape: dict, p: str, elem_bytes: int) -> int:
    t = shape["B"] * shape["S"] * shape["D"]
    one = 2 * (shape["Hq"] + shape["Hk"]) * t * elem_bytes + 2 * t * elem_bytes
    return 2 * one if p == "full" else one


# ---------------------------------------------------------------------------------------------
# Implementations.

def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def hf_apply_rotary_pos_emb(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
    """Hugging Face's Llama apply_rotary_pos_emb, verbatim: the eager baseline."""
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed


def impls() -> Dict[str, Callable]:
    return harness.function_impls(hf_apply_rotary_pos_emb,
                                  {"liger": "liger_kernel.transformers:liger_rotary_pos_emb",
                                   "ligerd": "ligerd.transformers:liger_rotary_pos_emb"})


def _cos_sin(b, s, d, dtype):
    inv = 1.0 / (500000.0 ** (torch.arange(0, d, 2, device=harness.DEVICE, dtype=torch.float32) / d))
    pos = torch.arange(s, device=harness.DEVICE, dtype=torch.float32)[None].expand(b, s)
    f = pos[..., None] * inv
    emb = torch.cat([f, f], -1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _on_bench_stream():
    return torch.cuda.stream(common.bench_stream()) if harness.DEVICE == "cuda" else contextlib.nullcontext()


def make_args(shape: dict, dtype):
    """[q, k, cos, sin], differentiable indices [0, 1]. q and k are non-leaf transposed views of
    [B, S, H*hd] "projection outputs" (x * 1 of a leaf, computed here, once, untimed).

    Made on the stream the steps are captured on: the backward delivers dq to q's autograd node
    on the stream that node was recorded on, and a node recorded on the default stream would
    make the captured backward wait on the legacy stream (an invalid capture)."""
    with _on_bench_stream():
        out = _make_args(shape, dtype)
    if harness.DEVICE == "cuda":
        common.bench_stream().synchronize()
    return out


def _make_args(shape: dict, dtype):
    b, s, hq, hk, d = shape["B"], shape["S"], shape["Hq"], shape["Hk"], shape["D"]
    xq = torch.randn(b, s, hq * d, device=harness.DEVICE, dtype=dtype, requires_grad=True)
    xk = torch.randn(b, s, hk * d, device=harness.DEVICE, dtype=dtype, requires_grad=True)
    q = (xq * 1).view(b, s, hq, d).transpose(1, 2)
    k = (xk * 1).view(b, s, hk, d).transpose(1, 2)
    cos, sin = _cos_sin(b, s, d, dtype)
    return [q, k, cos, sin], [0, 1]


def make_steps(fn, args, grad_idx, p):
    """One step of pass ``p`` on one copy of the args; nothing else is timed.

    fwd:  fn(q, k, cos, sin) under no_grad (Liger, ligerd: in place).
    bwd:  torch.autograd.grad over one forward run here beforehand (retain_graph=True), with
          respect to q and k themselves (not the projection leaves: no view/copy backward timed).
          Liger and ligerd rotate the grad_outputs dq, dk in place.
    full: forward + torch.autograd.grad (gradients returned, not accumulated).
    Gradients are taken at q's and k's gradient edges as they are when the forward starts: an
    in-place op that bumps q's version (ligerd, as torch's own in-place ops do) makes autograd
    regenerate q's grad_fn afterwards, so ``q`` itself no longer names the edge the op used."""
    q, k = args[0], args[1]
    with _on_bench_stream():
        dq = torch.randn_like(q)  # the layout autograd would hand over: q's (transposed) layout
        dk = torch.randn_like(k)
    inputs = [args[i] for i in grad_idx]
    if p == "fwd":
        def step():
            with torch.no_grad():
                fn(*args)
        return step
    edges = lambda: [torch.autograd.graph.get_gradient_edge(t) for t in inputs]  # noqa: E731
    if p == "bwd":
        with _on_bench_stream():
            e = edges()
            out = fn(*args)
        return lambda: torch.autograd.grad(out, e, (dq, dk), retain_graph=True)
    if p == "full":
        def full():
            e = edges()
            return torch.autograd.grad(fn(*args), e, (dq, dk))
        return full
    raise ValueError(p)
