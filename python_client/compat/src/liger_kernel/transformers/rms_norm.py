"""``liger_kernel.transformers.rms_norm``: the names of ligerd.transformers.rms_norm (ligerd's objects)."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.transformers.rms_norm")
