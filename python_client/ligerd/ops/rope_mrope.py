"""Qwen2-VL's multimodal RoPE (M-RoPE) on ligerd's RoPE kernel: Liger-Kernel's
``liger_multimodal_rotary_pos_emb`` / ``LigerQwen2VLMRopeFunction`` / ``liger_qwen2vl_mrope``,
i.e. transformers 4.x's ``apply_multimodal_rotary_pos_emb(q, k, cos, sin, mrope_section)``:

    sections = mrope_section * 2          # [t, h, w, t, h, w]: the same split for both halves
    cos = cat([chunk_i[i % 3] for i, chunk_i in enumerate(cos.split(sections, -1))], -1)
    (sin likewise), then the rotate_half RoPE of q and k with that (bsz, seq, head_dim) cos/sin.

cos and sin come as (3, bsz, seq, head_dim): one row per position axis (temporal, height, width).
The selection is a few small copies of per-token tensors (no head axis), done in torch; the
rotation of q and k is ligerd.ops.rope's (in place where legal, one launch for q and k).

transformers 5 (the releases ligerd patches) does this selection inside the rotary-embedding
modules of Qwen2-VL, Qwen2.5-VL and Qwen3-VL, whose ``apply_rotary_pos_emb`` is then the plain
rotate_half one; ligerd's patches replace that. This function is for code that calls the 4.x-style
function (and for the compat package's names).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch

from ligerd.ops import rope as _rope
from ligerd.ops._rope_kernels import _fail


def _sections(mrope_section) -> Tuple[int, int, int]:
    try:
        sec = tuple(int(s) for s in mrope_section)
    except (TypeError, ValueError):
        sec = ()
    if len(sec) != 3 or any(s < 0 for s in sec) or sum(sec) == 0:
        _fail(f"mrope_section must be 3 non-negative ints (temporal, height, width sizes over "
                    f"half the head dimension), got {mrope_section!r}")
    return sec


def mrope_cos_sin(cos: torch.Tensor, sin: torch.Tensor,
                  mrope_section: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(bsz, seq, head_dim) cos and sin from the (3, bsz, seq, head_dim) ones: head-dim chunk i of
    ``mrope_section * 2`` taken from position axis i % 3 (transformers' selection, exactly)."""
    sec = _sections(mrope_section)
    for name, t in (("cos", cos), ("sin", sin)):
        if not isinstance(t, torch.Tensor):
            _fail(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4 or t.shape[0] != 3:
            _fail(f"{name} must be (3, bsz, seq, head_dim) (temporal, height, width rows), "
                        f"got shape {tuple(t.shape)}")
        if 2 * sum(sec) != t.shape[-1]:
            _fail(f"mrope_section {list(sec)} covers {2 * sum(sec)} dims (twice its sum) but "
                        f"{name} has head_dim {t.shape[-1]}")
    if cos.shape != sin.shape:
        _fail(f"cos and sin must have the same shape, got {tuple(cos.shape)} and "
                    f"{tuple(sin.shape)}")
    split = list(sec) * 2

    def pick(t):
        return torch.cat([m[i % 3] for i, m in enumerate(t.split(split, dim=-1))], dim=-1)

    return pick(cos), pick(sin)


def multimodal_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                              mrope_section: Sequence[int],
                              unsqueeze_dim: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE of q (bsz, n_q_head, seq, head_dim) and k (bsz, n_kv_head, seq, head_dim) with cos,
    sin (3, bsz, seq, head_dim). ``unsqueeze_dim`` is accepted and ignored, as in Liger (the head
    axis is dim 1). Differentiable in q and k; rotated in place where ligerd.ops.rope would."""
    c, s = mrope_cos_sin(cos, sin, mrope_section)
    if isinstance(q, torch.Tensor) and q.dim() == 4 and c.shape[-1] != q.shape[-1]:
        _fail(f"cos/sin have head_dim {c.shape[-1]} but q has {q.shape[-1]} (M-RoPE rotates "
                    f"the whole head)")
    return _rope.rotary_pos_emb(q, k, c, s)


class LigerQwen2VLMRopeFunction:
    """Liger's ``LigerQwen2VLMRopeFunction.apply(q, k, cos, sin, mrope_section, unsqueeze_dim=1)``
    on ligerd's RoPE (see multimodal_rotary_pos_emb)."""

    @staticmethod
    def apply(q, k, cos, sin, mrope_section, unsqueeze_dim=1):
        return multimodal_rotary_pos_emb(q, k, cos, sin, mrope_section, unsqueeze_dim)


__all__ = ["mrope_cos_sin", "multimodal_rotary_pos_emb", "LigerQwen2VLMRopeFunction"]
