"""``liger_kernel.transformers.geglu``: the names of ligerd.transformers.geglu (ligerd's objects)."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.transformers.geglu")
