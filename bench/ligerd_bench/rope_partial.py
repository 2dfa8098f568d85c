"""Partial-rotary RoPE benchmark rows (bench/run_kernels.py --ops rope_partial): forward, backward
and forward+backward of transformers' partial-rotary apply_rotary_pos_emb (Qwen3-Next, Qwen3.5,
Phi-4-mini, GLM-4V-MoE: rotate_half over the first rotary_dim R of the head, the rest passed
through) for torch eager, torch.compile of the same and ligerd's liger_rotary_pos_emb (local
dispatch; the rope kernels on the strided views q[..., :R], k[..., :R], in place). Liger-Kernel's
rope takes the whole head only: no Liger row.

Inputs as bench/ligerd_bench/rope.py's (non-leaf transposed views of projection outputs, made
once, untimed; cos/sin of batch bsz over R), and its steps (make_steps).

Byte model (minimal traffic): an in-place rotation reads and writes the rotary part of q and k
and reads cos and sin once; the pass-through part is not touched:
fwd = bwd = 2*(Hq+Hk)*B*S*R*b + 2*B*S*R*b; full = fwd + bwd. (transformers' function moves the
whole head: its torch.cat writes fresh q and k.)
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch

from ligerd_bench import common
from ligerd_bench import harness
from ligerd_bench import rope as _rope

OP = "rope_partial"
TITLE = "RoPE, partial rotary (q and k, rotate_half over the first R of the head)"
PASSES = ("fwd", "bwd", "full")

QWEN3_NEXT = {"B": 4, "S": 4096, "Hq": 16, "Hk": 2, "D": 256, "R": 64}


def shapes(quick: bool) -> List[dict]:
    if quick:
        return [dict(QWEN3_NEXT)]
    return [dict(QWEN3_NEXT),
            {"B": 4, "S": 4096, "Hq": 24, "Hk": 8, "D": 128, "R": 96},   # Phi-4-mini (3/4)
            {"B": 4, "S": 4096, "Hq": 32, "Hk": 8, "D": 128, "R": 64},   # half of the head
            {"B": 4, "S": 4096, "Hq": 32, "Hk": 8, "D": 80, "R": 24}]    # odd pitch, scalar path


def bytes_moved(shape: dict, p: str, elem_bytes: int) -> int:
    t = shape["B"] * shape["S"] * shape["R"]
    one = 2 * (shape["Hq"] + shape["Hk"]) * t * elem_bytes + 2 * t * elem_bytes
    return 2 * one if p == "full" else one


def hf_apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    """transformers' partial-rotary apply_rotary_pos_emb (Qwen3-Next's), verbatim."""
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    rotary_dim = cos.shape[-1]
    q_rot, q_pass = q[..., :rotary_dim], q[..., rotary_dim:]
    k_rot, k_pass = k[..., :rotary_dim], k[..., rotary_dim:]
    q_embed = (q_rot * cos) + (_rope.rotate_half(q_rot) * sin)
    k_embed = (k_rot * cos) + (_rope.rotate_half(k_rot) * sin)
    q_embed = torch.cat([q_embed, q_pass], dim=-1)
    k_embed = torch.cat([k_embed, k_pass], dim=-1)
    return q_embed, k_embed


def impls() -> Dict[str, Callable]:
    return harness.function_impls(hf_apply_rotary_pos_emb, {"ligerd": "ligerd.transformers:liger_rotary_pos_emb"})


def make_args(shape: dict, dtype):
    """[q, k, cos, sin], differentiable indices [0, 1]: rope.py's inputs, cos/sin over R."""
    with _rope._on_bench_stream():
        (q, k, _, _), idx = _rope._make_args(shape, dtype)
        cos, sin = _rope._cos_sin(shape["B"], shape["S"], shape["R"], dtype)
    if harness.DEVICE == "cuda":
        common.bench_stream().synchronize()
    return [q, k, cos, sin], idx


make_steps = _rope.make_steps
