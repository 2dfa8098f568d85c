"""``liger_kernel.transformers.softmax``: the names of ligerd.transformers.softmax (ligerd's objects)."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.transformers.softmax")
