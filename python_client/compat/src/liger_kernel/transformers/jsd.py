"""``liger_kernel.transformers.jsd``: the names of ligerd.transformers.jsd (ligerd's objects)."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.transformers.jsd")
