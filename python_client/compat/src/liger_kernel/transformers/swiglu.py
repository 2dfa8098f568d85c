"""``liger_kernel.transformers.swiglu``: the names of ligerd.transformers.swiglu (ligerd's objects)."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.transformers.swiglu")
