"""``liger_kernel.transformers.fused_linear_cross_entropy``: the names of ligerd.transformers.fused_linear_cross_entropy (ligerd's objects)."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.transformers.fused_linear_cross_entropy")
