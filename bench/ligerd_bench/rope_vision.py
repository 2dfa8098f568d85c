"""Vision-tower RoPE benchmark rows (bench/run_kernels.py --ops rope_vision): forward, backward and
forward+backward of transformers' apply_rotary_pos_emb_vision (Qwen2-VL ... GLM-4V, Muse-Glimmer:
q, k (seq, heads, hd), rotate_half in fp32, cast back) for torch eager, torch.compile of the same,
Liger-Kernel's liger_rotary_pos_emb_vision (if importable: fp32 copies of q and k rotated in place
by its rope kernel, cast back) and ligerd's (local dispatch; the rope kernel on (seq, heads, 1, hd)
views of q and k, out of place).

Inputs are what a vision attention hands the function: q and k ``unbind`` views of one fused
projection, ``(x * 1).reshape(seq, 3, heads, hd).permute(1, 0, 2, 3).unbind(0)`` (non-leaf,
strided, made once, untimed), cos/sin (seq, hd) in fp32 as the vision rotary embeddings return
them. Steps: bench/ligerd_bench/rope.py's make_steps.

Byte model (minimal traffic): out of place, as transformers' function: read q and k, write their
results, read cos and sin (fp32) once:
fwd = bwd = 4*H*S*hd*b + 2*S*hd*4; full = fwd + bwd.
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch

from ligerd_bench import common
from ligerd_bench import harness
from ligerd_bench import rope as _rope

OP = "rope_vision"
TITLE = "RoPE, vision towers (q and k (seq, heads, hd), fp32 inside)"
PASSES = ("fwd", "bwd", "full")

QWEN2_5_VL = {"S": 16384, "H": 16, "D": 80}


def shapes(quick: bool) -> List[dict]:
    if quick:
        return [dict(QWEN2_5_VL)]
    return [dict(QWEN2_5_VL),
            {"S": 16384, "H": 16, "D": 72},     # Qwen3-VL, Qwen3.5
            {"S": 16384, "H": 12, "D": 128},    # GLM-4V
            {"S": 65536, "H": 16, "D": 80}]     # a video's patches


def bytes_moved(shape: dict, p: str, elem_bytes: int) -> int:
    t = shape["S"] * shape["D"]
    one = 4 * shape["H"] * t * elem_bytes + 2 * t * 4
    return 2 * one if p == "full" else one


def hf_apply_rotary_pos_emb_vision(q, k, cos, sin):
    """transformers' apply_rotary_pos_emb_vision (Qwen2-VL's, the same in every module), verbatim."""
    orig_q_dtype = q.dtype
    orig_k_dtype = k.dtype
    q, k = q.float(), k.float()
    cos, sin = cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()
    q_embed = (q * cos) + (_rope.rotate_half(q) * sin)
    k_embed = (k * cos) + (_rope.rotate_half(k) * sin)
    q_embed = q_embed.to(orig_q_dtype)
    k_embed = k_embed.to(orig_k_dtype)
    return q_embed, k_embed


def impls() -> Dict[str, Callable]:
    return harness.function_impls(hf_apply_rotary_pos_emb_vision,
                                  {"liger": "liger_kernel.transformers.rope:liger_rotary_pos_emb_vision",
                                   "ligerd": "ligerd.transformers.rope:liger_rotary_pos_emb_vision"})


def make_args(shape: dict, dtype):
    """[q, k, cos, sin], differentiable indices [0, 1]: q and k unbind views of a fused qkv
    "projection output" (x * 1 of a leaf, computed once, untimed), on the bench stream (see
    rope.make_args)."""
    s, h, d = shape["S"], shape["H"], shape["D"]
    with _rope._on_bench_stream():
        x = torch.randn(s, 3 * h * d, device=harness.DEVICE, dtype=dtype, requires_grad=True)
        q, k, _ = (x * 1).reshape(s, 3, h, d).permute(1, 0, 2, 3).unbind(0)
        cos, sin = _rope._cos_sin(1, s, d, torch.float32)
        cos, sin = cos[0], sin[0]
    if harness.DEVICE == "cuda":
        common.bench_stream().synchronize()
    return [q, k, cos, sin], [0, 1]


make_steps = _rope.make_steps
