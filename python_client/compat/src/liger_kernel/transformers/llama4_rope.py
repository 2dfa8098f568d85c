"""``liger_kernel.transformers.llama4_rope``: the names of ligerd.transformers.rope_interleaved
(ligerd's objects; liger_llama4_text_rotary_pos_emb among them). Llama-4's vision RoPE is kept as
transformers' (docs/models.md): its names here are stand-ins (LigerdNotProvidedError on use)."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(
    globals(), "ligerd.transformers.rope_interleaved",
    missing=("liger_llama4_vision_rotary_pos_emb", "apply_liger_llama4_rope_full"))
