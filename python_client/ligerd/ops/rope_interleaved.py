"""Interleaved and half-size-cos RoPE variants on ligerd's rotate_half RoPE (ligerd.ops.rope), by
composition in Python; no kernel of its own.

The identity. An interleaved rotation of the pairs (x[2i], x[2i+1]) with per-channel cos/sin

    y[2i]   = x[2i]   * cos[2i]   - x[2i+1] * sin[2i]
    y[2i+1] = x[2i+1] * cos[2i+1] + x[2i]   * sin[2i+1]

is, channel for channel, the rotate_half rotation ``z = u * c + rotate_half(u) * s`` of the
de-interleaved vector ``u = D(x) = [x0, x2, x4, ..., x1, x3, ...]`` with ``c = D(cos)``,
``s = D(sin)``, followed by re-interleaving: ``y = D^-1(z)``. (rotate_half(u) = [-u_hi, u_lo], so
z[i] = x[2i] c[i] - x[2i+1] s[i] with c[i] = cos[2i], s[i] = sin[2i], and z[i + d/2] =
x[2i+1] c[i + d/2] + x[2i] s[i + d/2] with c[i + d/2] = cos[2i+1], s[i + d/2] = sin[2i+1].)
It is exact for any cos/sin, since ligerd's kernel multiplies both halves of the cos/sin rows as
given (kernels/ops/rope.cuh), and the permutations D and D^-1 move values without arithmetic. So
each output element is computed as by the rotate_half kernel (fp32, one rounding), and the
backward, the transpose of that map, is torch's autograd of the permutation copies around
ligerd's own RoPE backward.

The transformers functions this covers (the same in transformers 5.17 and 5.25):

- GLM-4 ``apply_rotary_pos_emb``: cos/sin of width rotary_dim, whose first half is
  repeat-interleaved (``cos[..., :rd/2].repeat_interleave(2)``), the first rotary_dim channels of
  q/k rotated in interleaved pairs, the rest passed through: D(cos) = cat(cos_half, cos_half).
- GLM-4V's text ``apply_rotary_pos_emb``: the same with cos/sin already interleaved (its rotary
  embedding repeat-interleaves them); D(cos) taken from cos as given.
- DeepSeek-V3 ``apply_rotary_pos_emb_interleave``: the pairs of q/k rotated by the first half of
  cos/sin, the result returned DE-interleaved (``cat([x_even', x_odd'])``): D, rotate, no D^-1.
  Its plain ``apply_rotary_pos_emb`` (config.rope_interleave False) is the rotate_half RoPE of
  ``torch.split`` views, which must not be written in place: ``split_view_rotary_pos_emb``.
- DeepSeek-V2 and Llama-4 (text) ``apply_rotary_emb``: complex multiply of (real, imag) pairs by
  ``freqs_cis = cos + i sin`` (width d/2), computed in fp32, cast back to q's dtype: the interleaved
  rotation with cos = freqs_cis.real, sin = freqs_cis.imag, D(cos) = cat(real, real). Llama-4's
  q/k are (bsz, seq, heads, hd) (before the transpose); DeepSeek-V2's are (bsz, heads, seq, hd).
- DeepSeek-V4 ``apply_rotary_pos_emb(x, cos, sin)``: ONE tensor, its trailing 2 * cos.shape[-1]
  channels rotated in interleaved pairs by half-size cos/sin (repeat-interleaved), in fp32.
- Gemma-4 ``apply_rotary_pos_emb(x, cos, sin, unsqueeze_dim)``: the plain rotate_half RoPE of ONE
  tensor. The op rotates q and k in one launch; a single tensor is q with an empty k (Hk = 0).
- GPT-OSS ``apply_rotary_pos_emb``: ``[x1 * cos - x2 * sin, x2 * cos + x1 * sin]`` over the halves
  x1, x2 with half-size cos/sin: the rotate_half rotation with cos/sin concatenated to full size
  (no permutation at all).
"""

from __future__ import annotations

from typing import Tuple

import torch

from ligerd.ops import _rope_kernels as _rope
from ligerd.ops.rope import rotary_pos_emb


def deinterleave(x: torch.Tensor) -> torch.Tensor:
    """D(x): ``[x0, x2, x4, ..., x1, x3, ...]`` over the last dim, a fresh contiguous tensor."""
    return torch.cat([x[..., 0::2], x[..., 1::2]], dim=-1)


def reinterleave(z: torch.Tensor) -> torch.Tensor:
    """D^-1(z): the inverse of ``deinterleave``, a fresh contiguous tensor."""
    h = z.shape[-1] // 2
    return torch.stack([z[..., :h], z[..., h:]], dim=-1).flatten(-2)


def _even_last(x, name: str, what: str):
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        _rope._fail(f"{what}: {name} must be a 4-d tensor (bsz, heads, seq, head_dim), got {shape}")


def _rotate(qd, kd, cd, sd, heads_dim: int = 1):
    """ligerd's rotate_half RoPE of de-interleaved q/k copies (heads on dim ``heads_dim``: 1 for
    (bsz, heads, seq, d), 2 for (bsz, seq, heads, d), which is rotated through a transposed view)."""
    if heads_dim == 2:
        rq, rk = rotary_pos_emb(qd.transpose(1, 2), kd.transpose(1, 2), cd, sd)
        return rq.transpose(1, 2), rk.transpose(1, 2)
    return rotary_pos_emb(qd, kd, cd, sd)


def _interleaved(q, k, cd, sd, rd: int, heads_dim: int, reinterleave_out: bool, what: str):
    """Rotate the first ``rd`` channels of q and k in interleaved pairs, given the DE-interleaved
    cos/sin ``cd``/``sd`` (width rd); pass the rest through."""
    _even_last(q, "q", what)
    _even_last(k, "k", what)
    hd = q.shape[-1]
    if rd <= 0 or rd % 2 or rd > hd or k.shape[-1] != hd:
        _rope._fail(f"{what}: the rotary dimension must be even, > 0 and <= head_dim, with q and k "
                    f"of one head_dim; got rotary_dim {rd}, q {tuple(q.shape)}, k {tuple(k.shape)}")
    qr, kr = (q, k) if rd == hd else (q[..., :rd], k[..., :rd])
    oq, ok = _rotate(deinterleave(qr), deinterleave(kr), cd, sd, heads_dim)
    if reinterleave_out:
        oq, ok = reinterleave(oq), reinterleave(ok)
    if rd == hd:
        return oq, ok
    return torch.cat([oq, q[..., rd:]], dim=-1), torch.cat([ok, k[..., rd:]], dim=-1)


def interleaved_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                               sin: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """GLM-4V's text ``apply_rotary_pos_emb``: cos/sin (1 or bsz, seq, rotary_dim) in the
    interleaved layout; the first rotary_dim channels of q/k (bsz, heads, seq, hd) rotated in pairs
    (2i, 2i+1), the rest passed through."""
    what = "interleaved RoPE"
    if not isinstance(cos, torch.Tensor) or not isinstance(sin, torch.Tensor) or cos.dim() == 0:
        _rope._fail(f"{what}: cos and sin must be tensors (1 or bsz, seq, rotary_dim)")
    return _interleaved(q, k, deinterleave(cos), deinterleave(sin), cos.shape[-1], 1, True, what)


def _half_cat(x: torch.Tensor) -> torch.Tensor:
    h = x[..., : x.shape[-1] // 2]
    return torch.cat([h, h], dim=-1)


def glm_rotary_pos_emb(q, k, cos, sin):
    """GLM-4's ``apply_rotary_pos_emb``: cos/sin (1 or bsz, seq, rotary_dim) in the standard
    layout, of which GLM uses the first half repeat-interleaved; pairs rotated, rest passed through."""
    what = "GLM-4 interleaved RoPE"
    if not isinstance(cos, torch.Tensor) or not isinstance(sin, torch.Tensor) or cos.dim() == 0:
        _rope._fail(f"{what}: cos and sin must be tensors (1 or bsz, seq, rotary_dim)")
    if cos.shape[-1] % 2:  # transformers' own function fails to broadcast there: never round it down
        _rope._fail(f"{what}: cos/sin's last dim (the rotary dimension) must be even, got {tuple(cos.shape)}")
    rd = cos.shape[-1]
    return _interleaved(q, k, _half_cat(cos), _half_cat(sin), rd, 1, True, what)


def deepseek_interleave_rotary_pos_emb(q, k, cos, sin):
    """DeepSeek-V3's ``apply_rotary_pos_emb_interleave``: q/k (bsz, heads, seq, d) rotated in pairs
    by the first half of cos/sin (1 or bsz, seq, d), returned DE-interleaved, as transformers does."""
    what = "DeepSeek-V3 interleaved RoPE"
    if not isinstance(cos, torch.Tensor) or not isinstance(sin, torch.Tensor) or cos.dim() == 0:
        _rope._fail(f"{what}: cos and sin must be tensors (1 or bsz, seq, head_dim)")
    _even_last(q, "q", what)
    if cos.shape[-1] != q.shape[-1]:
        _rope._fail(f"{what}: cos/sin must span q's head_dim {q.shape[-1]}, got {tuple(cos.shape)}")
    return _interleaved(q, k, _half_cat(cos), _half_cat(sin), q.shape[-1], 1, False, what)


def split_view_rotary_pos_emb(q, k, cos, sin):
    """DeepSeek-V3's plain (rotate_half) ``apply_rotary_pos_emb`` of its MLA rope parts: q/k are
    outputs of ``torch.split``, views autograd forbids writing in place, so always out of place
    (``ligerd::rope``, fresh outputs, differentiable), never ligerd.ops.rope's in-place path."""
    cos, sin = _rope.check_inputs(q, k, cos, sin)
    if q.numel() + k.numel() == 0:
        return q.clone(), k.clone()
    return _rope.rope_out(_rope._contig_last(q), _rope._contig_last(k), cos, sin, False)


def _one_tensor(x, unsqueeze_dim, what):
    """x as (bsz, heads, seq, d) (transposed view for heads on dim 2), whether it was transposed,
    and an empty k of that shape's batch/seq (the op rotates q and k; Hk = 0 is allowed)."""
    _even_last(x, "x", what)
    if unsqueeze_dim in (1, -3):
        t = False
    elif unsqueeze_dim in (2, -2):
        t = True
    else:
        _rope._fail(f"{what}: unsqueeze_dim must be 1 (x (bsz, heads, seq, d)) or 2 (x (bsz, seq, "
                    f"heads, d)), got {unsqueeze_dim}")
    xv = x.transpose(1, 2) if t else x
    return xv, t, xv.new_empty(xv.shape[0], 0, xv.shape[2], xv.shape[3])


def single_rotary_pos_emb(x, cos, sin, unsqueeze_dim=1):
    """Gemma-4's ``apply_rotary_pos_emb(x, cos, sin, unsqueeze_dim)``: the rotate_half RoPE of ONE
    tensor (q or k, called separately): ligerd's op with x as q and an empty k, out of place (x
    may be a torch.split view: Gemma-4's multidimensional vision RoPE)."""
    xv, t, k = _one_tensor(x, unsqueeze_dim, "one-tensor RoPE (Gemma-4)")
    cos, sin = _rope.check_inputs(xv, k, cos, sin)
    out, _ = _rope.rope_out(_rope._contig_last(xv), k, cos, sin, False)
    return out.transpose(1, 2) if t else out


def trailing_interleaved_rotary_pos_emb(x, cos, sin, unsqueeze_dim=1):
    """DeepSeek-V4's ``apply_rotary_pos_emb(x, cos, sin, unsqueeze_dim)``: one tensor, its LAST
    ``rd = 2 * cos.shape[-1]`` channels rotated in interleaved pairs by half-size cos/sin
    (repeat-interleaved by transformers: D of that is cat(cos, cos)), computed in fp32 and rounded
    once to x's dtype; the leading channels passed through."""
    what = "DeepSeek-V4 trailing interleaved RoPE"
    xv, t, _ = _one_tensor(x, unsqueeze_dim, what)
    if not isinstance(cos, torch.Tensor) or not isinstance(sin, torch.Tensor) or cos.dim() == 0:
        _rope._fail(f"{what}: cos and sin must be tensors (1 or bsz, seq, rope_dim/2)")
    rd, hd = 2 * cos.shape[-1], xv.shape[-1]
    if rd <= 0 or rd > hd:
        _rope._fail(f"{what}: 2 * cos.shape[-1] = {rd} must be in (0, head_dim {hd}]")
    rope = deinterleave(xv[..., hd - rd:])
    k = rope.new_empty(rope.shape[0], 0, rope.shape[2], rd)
    cd, sd = _rope.check_inputs(rope, k, torch.cat([cos, cos], -1), torch.cat([sin, sin], -1))
    out, _ = _rope.rope_out(rope, k, cd, sd, False)
    out = reinterleave(out)
    if rd < hd:
        out = torch.cat([xv[..., :hd - rd], out], dim=-1)
    return out.transpose(1, 2) if t else out


def complex_rotary_pos_emb(xq, xk, freqs_cis, heads_dim: int = 1):
    """DeepSeek-V2 / Llama-4 ``apply_rotary_emb``: (real, imag) pairs of q/k times the complex
    ``freqs_cis`` (1 or bsz, seq, hd/2). q/k are (bsz, heads, seq, hd) for ``heads_dim`` 1
    (DeepSeek-V2) or (bsz, seq, heads, hd) for 2 (Llama-4)."""
    what = "complex RoPE (freqs_cis)"
    if not isinstance(freqs_cis, torch.Tensor) or not freqs_cis.is_complex() or freqs_cis.dim() != 3:
        shape = tuple(freqs_cis.shape) if isinstance(freqs_cis, torch.Tensor) else type(freqs_cis).__name__
        dtype = freqs_cis.dtype if isinstance(freqs_cis, torch.Tensor) else None
        _rope._fail(f"{what}: freqs_cis must be a complex (bsz or 1, seq, head_dim/2) tensor, got "
                    f"{shape} {dtype}")
    _even_last(xq, "q", what)
    if 2 * freqs_cis.shape[-1] != xq.shape[-1]:
        _rope._fail(f"{what}: freqs_cis's last dim must be head_dim/2 = {xq.shape[-1] // 2}, got "
                    f"{freqs_cis.shape[-1]}")
    re, im = freqs_cis.real, freqs_cis.imag
    cd, sd = torch.cat([re, re], dim=-1), torch.cat([im, im], dim=-1)
    return _interleaved(xq, xk, cd, sd, xq.shape[-1], heads_dim, True, what)


def half_cos_rotary_pos_emb(q, k, cos, sin):
    """GPT-OSS's ``apply_rotary_pos_emb``: the halves x1, x2 of q/k (bsz, heads, seq, hd) become
    ``[x1 * cos - x2 * sin, x2 * cos + x1 * sin]`` with cos/sin (1 or bsz, seq, hd/2): ligerd's
    rotate_half RoPE with cos/sin concatenated to full size."""
    what = "half-size-cos RoPE (GPT-OSS)"
    if not isinstance(cos, torch.Tensor) or not isinstance(sin, torch.Tensor) or cos.dim() == 0:
        _rope._fail(f"{what}: cos and sin must be tensors (1 or bsz, seq, head_dim/2)")
    _even_last(q, "q", what)
    if 2 * cos.shape[-1] != q.shape[-1]:
        _rope._fail(f"{what}: cos/sin's last dim must be head_dim/2 = {q.shape[-1] // 2}, got "
                    f"{cos.shape[-1]}")
    return rotary_pos_emb(q, k, torch.cat([cos, cos], dim=-1), torch.cat([sin, sin], dim=-1))


__all__ = ["complex_rotary_pos_emb", "deepseek_interleave_rotary_pos_emb", "deinterleave",
           "glm_rotary_pos_emb", "half_cos_rotary_pos_emb", "interleaved_rotary_pos_emb",
           "reinterleave", "single_rotary_pos_emb", "split_view_rotary_pos_emb",
           "trailing_interleaved_rotary_pos_emb"]
