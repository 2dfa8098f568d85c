"""``liger_kernel.transformers.cross_entropy``: the names of ligerd.transformers.cross_entropy (ligerd's objects)."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.transformers.cross_entropy")
