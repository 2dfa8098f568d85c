"""``liger_kernel.transformers.qwen2vl_mrope``: the names of ligerd.transformers.qwen2vl_mrope
(ligerd's objects)."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.transformers.qwen2vl_mrope")
