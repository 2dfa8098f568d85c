"""``liger_kernel.transformers.fused_add_rms_norm``: the names of ligerd.transformers.fused_add_rms_norm (ligerd's objects)."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.transformers.fused_add_rms_norm")
