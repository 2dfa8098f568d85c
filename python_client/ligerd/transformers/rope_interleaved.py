"""Drop-in replacements for the transformers RoPE functions whose layout is not HF Llama's
rotate_half (interleaved pairs, complex freqs_cis, half-size cos/sin), computed exactly by
ligerd's RoPE kernel around de-/re-interleaving copies (ligerd.ops.rope_interleaved has the
identity). Each keeps the signature of the transformers function it replaces; ``unsqueeze_dim``
/ ``position_ids`` are accepted and ignored (the callers pass the defaults: heads on dim 1)."""

from __future__ import annotations

import torch

from ligerd._errors import warn_once
from ligerd.ops import rope_interleaved as _ri


def liger_glm4_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    """``transformers.models.glm4.modeling_glm4.apply_rotary_pos_emb``."""
    return _ri.glm_rotary_pos_emb(q, k, cos, sin)


def liger_glm4v_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    """``transformers.models.glm4v.modeling_glm4v.apply_rotary_pos_emb`` (the text model's)."""
    return _ri.interleaved_rotary_pos_emb(q, k, cos, sin)


def liger_deepseek_v3_rotary_pos_emb_interleave(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
    """``transformers.models.deepseek_v3.modeling_deepseek_v3.apply_rotary_pos_emb_interleave``
    (its result de-interleaved, as transformers returns it)."""
    return _ri.deepseek_interleave_rotary_pos_emb(q, k, cos, sin)


def liger_deepseek_v3_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    """``transformers.models.deepseek_v3.modeling_deepseek_v3.apply_rotary_pos_emb`` (rotate_half,
    on torch.split views: out of place)."""
    return _ri.split_view_rotary_pos_emb(q, k, cos, sin)


def liger_deepseek_v2_rotary_emb(xq, xk, freqs_cis):
    """``transformers.models.deepseek_v2.modeling_deepseek_v2.apply_rotary_emb``: q/k
    (bsz, heads, seq, hd), freqs_cis complex (bsz, seq, hd/2)."""
    return _ri.complex_rotary_pos_emb(xq, xk, freqs_cis, heads_dim=1)


def liger_llama4_text_rotary_pos_emb(xq, xk, freqs_cis):
    """Liger's name for ``transformers.models.llama4.modeling_llama4.apply_rotary_emb``: q/k
    (bsz, seq, heads, hd), freqs_cis complex (bsz, seq, hd/2)."""
    return _ri.complex_rotary_pos_emb(xq, xk, freqs_cis, heads_dim=2)


def liger_deepseek_v4_rotary_pos_emb(x, cos, sin, unsqueeze_dim=1):
    """``transformers.models.deepseek_v4.modeling_deepseek_v4.apply_rotary_pos_emb`` (one tensor,
    trailing interleaved rope channels)."""
    return _ri.trailing_interleaved_rotary_pos_emb(x, cos, sin, unsqueeze_dim)


def liger_gemma4_rotary_pos_emb(x, cos, sin, unsqueeze_dim=1):
    """``transformers.models.gemma4.modeling_gemma4.apply_rotary_pos_emb`` (one tensor)."""
    return _ri.single_rotary_pos_emb(x, cos, sin, unsqueeze_dim)


def liger_llama4_vision_rotary_pos_emb(query, key, freqs_ci):
    """Liger's name for ``transformers.models.llama4.modeling_llama4.vision_apply_rotary_emb``:
    query/key (bsz, seq, heads, hd), freqs_ci complex with seq * hd/2 elements ((seq, 1, hd/2),
    viewed as (1, seq, 1, hd/2) by transformers). A freqs_ci that is not complex (a model cast
    with ``.to(bfloat16)`` drops the imaginary part) is computed by transformers' own function,
    as Liger falls back to its torch reference, with a one-time warning."""
    s, hd = query.shape[1], query.shape[-1]
    if (isinstance(freqs_ci, torch.Tensor) and freqs_ci.is_complex() and query.dim() == 4
            and freqs_ci.numel() == s * (hd // 2)):
        return _ri.complex_rotary_pos_emb(query, key, freqs_ci.reshape(1, s, hd // 2), heads_dim=2)
    warn_once("llama4-vision-rope-real-freqs",
              "ligerd: liger_llama4_vision_rotary_pos_emb got a freqs_ci that is not a complex "
              f"(seq, 1, head_dim/2) tensor ({getattr(freqs_ci, 'dtype', type(freqs_ci).__name__)}); "
              "transformers' vision_apply_rotary_emb computes it", stacklevel=3)
    import importlib
    from ligerd.transformers._patching import original
    modeling = importlib.import_module("transformers.models.llama4.modeling_llama4")
    return original(modeling, "vision_apply_rotary_emb")(query, key, freqs_ci)


def liger_gpt_oss_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    """``transformers.models.gpt_oss.modeling_gpt_oss.apply_rotary_pos_emb`` (half-size cos/sin)."""
    return _ri.half_cos_rotary_pos_emb(q, k, cos, sin)


__all__ = ["liger_deepseek_v2_rotary_emb", "liger_deepseek_v3_rotary_pos_emb",
           "liger_deepseek_v3_rotary_pos_emb_interleave",
           "liger_deepseek_v4_rotary_pos_emb", "liger_gemma4_rotary_pos_emb", "liger_glm4_rotary_pos_emb", "liger_glm4v_rotary_pos_emb", "liger_gpt_oss_rotary_pos_emb",
           "liger_llama4_text_rotary_pos_emb", "liger_llama4_vision_rotary_pos_emb"]
