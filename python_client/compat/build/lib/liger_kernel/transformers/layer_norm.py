"""``liger_kernel.transformers.layer_norm``: the names of ligerd.transformers.layer_norm (ligerd's objects)."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.transformers.layer_norm")
