"""``liger_kernel.chunked_loss.functional``: ligerd.chunked_loss.functional's
``liger_fused_linear_<loss>`` (the ligerd objects)."""

from liger_kernel import _shim

LIGER_NAMES = (
    "liger_fused_linear_orpo", "liger_fused_linear_dpo", "liger_fused_linear_jsd", "liger_fused_linear_cosine",
    "liger_fused_linear_cpo", "liger_fused_linear_simpo", "liger_fused_linear_kto", "liger_fused_linear_grpo",
)

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.chunked_loss.functional", LIGER_NAMES)
