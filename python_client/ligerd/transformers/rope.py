"""``liger_rotary_pos_emb`` and ``liger_rotary_pos_emb_vision`` with Liger-Kernel's signatures, on
ligerd's kernels (Liger-Kernel's ``liger_kernel.transformers.rope``)."""

from __future__ import annotations

from ligerd.ops.rope import LigerRopeFunction, rotary_pos_emb
from ligerd.ops.rope_vision import vision_rotary_pos_emb


def liger_rotary_pos_emb(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
    """HF Llama ``apply_rotary_pos_emb`` (rotate_half) on q ``(bsz, n_q_head, seq, hd)`` and k
    ``(bsz, n_kv_head, seq, hd)`` with cos/sin ``(1 or bsz, seq, hd)``; one launch for both.
    Rotates q and k in place where legal (eager mode; see ligerd.ops.rope) and returns
    ``(q, k)``. ``position_ids`` and ``unsqueeze_dim`` are ignored, as in Liger.

    cos/sin of last dim ``rotary_dim`` < hd: HF's partial rotary embedding (Phi-3 with a
    partial_rotary_factor, Qwen3-Next, Qwen3.5, GLM-4V-MoE): the first rotary_dim of each head
    rotated, the rest passed through (ligerd.ops.rope_partial; Liger's kernel requires the full
    head)."""
    return rotary_pos_emb(q, k, cos, sin)


def liger_rotary_pos_emb_vision(q, k, cos, sin):
    """transformers' ``apply_rotary_pos_emb_vision`` (the vision towers of Qwen2-VL, Qwen2.5-VL,
    Qwen3-VL(-MoE), Qwen3.5(-MoE), GLM-4V(-MoE), Muse-Glimmer): q ``(seq, n_q_head, hd)``, k
    ``(seq, n_kv_head, hd)``, cos/sin ``(seq, hd)``; rotate_half in float32, each result cast back
    to its input's dtype, as transformers computes it (ligerd.ops.rope_vision). Returns fresh
    tensors: q and k are never written (Liger's rotates fp32 inputs in place)."""
    return vision_rotary_pos_emb(q, k, cos, sin)


__all__ = ["LigerRopeFunction", "liger_rotary_pos_emb", "liger_rotary_pos_emb_vision"]
