"""``liger_rotary_pos_emb`` with Liger-Kernel's signature and semantics, on ligerd's kernels."""

from __future__ import annotations

from ligerd.ops.rope import LigerRopeFunction, rotary_pos_emb


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


__all__ = ["LigerRopeFunction", "liger_rotary_pos_emb"]
