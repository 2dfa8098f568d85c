"""``liger_kernel.transformers.model``: ligerd.transformers.model's names."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.transformers.model")
