"""``liger_kernel.transformers.llama4_rope``: the names of ligerd.transformers.rope_interleaved
(ligerd's objects: liger_llama4_text_rotary_pos_emb, liger_llama4_vision_rotary_pos_emb); Liger's
apply_liger_llama4_rope_full is a stand-in (LigerdNotProvidedError on use)."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(
    globals(), "ligerd.transformers.rope_interleaved",
    missing=("apply_liger_llama4_rope_full",))
