"""``liger_kernel.transformers.rope``: the names of ligerd.transformers.rope (ligerd's objects)."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.transformers.rope")
