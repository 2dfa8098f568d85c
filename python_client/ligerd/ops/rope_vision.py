"""The vision towers' RoPE, transformers' ``apply_rotary_pos_emb_vision(q, k, cos, sin)``, on
ligerd's rotate_half RoPE op (ligerd.ops._rope_kernels); no kernel of its own.

What transformers computes (the same function in Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE,
Qwen3.5, Qwen3.5-MoE, GLM-4V, GLM-4V-MoE and Muse-Glimmer, transformers 5.17 and 5.25): q, k of
shape (seq, heads, head_dim) (Muse-Glimmer: (1, seq, heads, head_dim)), cos, sin of shape (seq,
head_dim), broadcast over the heads;

    q, k = q.float(), k.float();  cos, sin = cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()
    q_embed = q * cos + rotate_half(q) * sin   (and k's)
    return q_embed.to(q's dtype), k_embed.to(k's dtype)

so: rotate_half in float32, rounded once to each input's own dtype; fresh outputs, never in place.

How ligerd computes it. The op takes q, k as (batch, heads, seq, head_dim) and cos/sin as
(1 or batch, seq, head_dim), through any strides but a contiguous last dim. A vision q (seq,
heads, d) is, without a copy, ``q.unsqueeze(2)``: batch = the vision sequence, one position per
"batch", with cos.unsqueeze(1) (seq, 1, d) as its per-batch cos. The out-of-place op then writes
fresh outputs (seq, heads, 1, d) laid out as transformers' results are (contiguous for the
strided unbind views of the vision attention's fused qkv; q's own strides for a dense q), and
``squeeze(2)`` gives them back as (seq, heads, d). A 4-d q (batch, seq, heads, d) is the op's
own layout transposed (``q.transpose(1, 2)``), with cos/sin (seq, d) or (1 or batch, seq, d); its
outputs have q's strides where q is dense (Muse-Glimmer's reshaped projections).

The kernel loads bf16/fp16 q and k, computes in fp32 and rounds once to q's dtype, which is
transformers' float32 computation with its cast back (the kernel fuses each output's multiply-add
and rounds once, where torch rounds the two products and their sum in fp32: an fp32 ulp, below a
bf16/fp16 output's rounding). cos/sin are handed to the op as float32 unless already in q's dtype
(the op reads either; bf16/fp16 values widen exactly), as transformers' ``.float()``.

What the op's dtypes cannot hold directly is cast as transformers casts it: float64 q/k (or q and
k of different dtypes) go through the op in float32 and each result is cast back to its input's
dtype, which is what transformers' ``q.float()`` ... ``.to(orig_q_dtype)`` computes too. The
backward is the op's (the transpose rotation, fp32, rounded once to the gradient's dtype), with
autograd's casts around it where the forward cast.
"""

from __future__ import annotations

from typing import Tuple

import torch

from ligerd.ops import _rope_kernels as _rope

WHAT = "vision RoPE (apply_rotary_pos_emb_vision)"
_OP_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _shape(t) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def _check(q, k, cos, sin) -> None:
    """Clear errors for what transformers' callers never pass (ligerd.OpInputError naming the op);
    device and dtype agreement is checked again by the op's own input checks."""
    for name, t in (("q", q), ("k", k), ("cos", cos), ("sin", sin)):
        if not isinstance(t, torch.Tensor):
            _rope._fail(f"{WHAT}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            _rope._fail(f"{WHAT}: {name} has dtype {t.dtype}; a floating-point dtype is needed")
    if q.dim() not in (3, 4) or k.dim() != q.dim():
        _rope._fail(f"{WHAT}: q and k must be (seq, heads, head_dim) or (batch, seq, heads, "
                    f"head_dim), got q {_shape(q)}, k {_shape(k)}")
    lead, d = tuple(q.shape[:-2]), q.shape[-1]
    if tuple(k.shape[:-2]) != lead or k.shape[-1] != d:
        _rope._fail(f"{WHAT}: k {_shape(k)} must have q's {'batch, ' if q.dim() == 4 else ''}seq "
                    f"and head_dim (q {_shape(q)})")
    if d == 0 or d % 2:
        _rope._fail(f"{WHAT}: head_dim must be even and > 0, got {d} (q {_shape(q)})")
    s = lead[-1]
    for name, t in (("cos", cos), ("sin", sin)):
        ok = t.dim() == 2 and t.shape[0] in (1, s) and t.shape[1] == d
        if q.dim() == 4 and t.dim() == 3:  # (1 or batch, seq or 1, d)
            ok = t.shape[0] in (1, lead[0]) and t.shape[1] in (1, s) and t.shape[2] == d
        if not ok:
            _rope._fail(f"{WHAT}: {name} must be (seq, head_dim) = ({s}, {d})"
                        + (f" or (1 or {lead[0]}, {s}, {d})" if q.dim() == 4 else "")
                        + f" for q {_shape(q)}, got {_shape(t)}")
    if cos.shape != sin.shape:
        _rope._fail(f"{WHAT}: cos {_shape(cos)} and sin {_shape(sin)} must have one shape")


def vision_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                          sin: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """transformers' ``apply_rotary_pos_emb_vision``: q (seq, heads_q, d), k (seq, heads_k, d),
    cos/sin (seq, d) (or q/k (batch, seq, heads, d)); returns fresh (q_embed, k_embed) in q's and
    k's dtypes, differentiable in q and k (cos and sin are constants, as in Liger). See the module
    docstring."""
    _check(q, k, cos, sin)
    cast = not (q.dtype == k.dtype and q.dtype in _OP_DTYPES)
    qx, kx = (q.float(), k.float()) if cast else (q, k)
    if not (cos.dtype == sin.dtype and cos.dtype in (torch.float32, qx.dtype)):
        cos, sin = cos.float(), sin.float()
    if q.dim() == 3:  # (seq, heads, 1, d): one position per op batch row, cos (seq or 1, 1, d)
        q4, k4 = qx.unsqueeze(2), kx.unsqueeze(2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    else:  # (batch, heads, seq, d), cos (1 or batch, seq, d)
        q4, k4 = qx.transpose(1, 2), kx.transpose(1, 2)
        seq = q4.shape[2]
        if cos.dim() == 2:
            cos, sin = cos.unsqueeze(0), sin.unsqueeze(0)
        cos, sin = cos.expand(-1, seq, -1), sin.expand(-1, seq, -1)  # a seq of 1 broadcast: stride 0
    q4, k4 = _rope._contig_last(q4), _rope._contig_last(k4)
    c3, s3 = _rope.check_inputs(q4, k4, cos, sin)
    oq, ok = _rope.rope_out(q4, k4, c3, s3, False)
    if q.dim() == 3:
        oq, ok = oq.squeeze(2), ok.squeeze(2)
    else:
        oq, ok = oq.transpose(1, 2), ok.transpose(1, 2)
    if cast:
        oq, ok = oq.to(q.dtype), ok.to(k.dtype)
    return oq, ok


__all__ = ["vision_rotary_pos_emb"]
