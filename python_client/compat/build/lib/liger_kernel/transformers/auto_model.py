"""``liger_kernel.transformers.auto_model``: the names of ligerd.transformers.auto_model (ligerd's objects)."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.transformers.auto_model")
