"""``liger_multimodal_rotary_pos_emb`` with Liger-Kernel's signature and semantics, on ligerd's
RoPE kernel (ligerd.ops.rope_mrope: the section selection of cos/sin in torch, the rotation of q
and k by the rope kernel)."""

from __future__ import annotations

from ligerd.ops.rope_mrope import LigerQwen2VLMRopeFunction, multimodal_rotary_pos_emb


def liger_multimodal_rotary_pos_emb(q, k, cos, sin, mrope_section, unsqueeze_dim=1):
    """transformers 4.x's Qwen2-VL ``apply_multimodal_rotary_pos_emb``: q ``(bsz, n_q_head, seq,
    hd)``, k ``(bsz, n_kv_head, seq, hd)``, cos/sin ``(3, bsz, seq, hd)`` (temporal, height, width
    rows), ``mrope_section`` the three section sizes over hd/2. Rotates q and k in place where
    legal (eager mode; see ligerd.ops.rope) and returns ``(q, k)``; ``unsqueeze_dim`` is ignored,
    as in Liger."""
    return multimodal_rotary_pos_emb(q, k, cos, sin, mrope_section, unsqueeze_dim)


__all__ = ["LigerQwen2VLMRopeFunction", "liger_multimodal_rotary_pos_emb"]
