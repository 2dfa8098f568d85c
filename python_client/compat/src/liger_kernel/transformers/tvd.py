"""``liger_kernel.transformers.tvd``: the names of ligerd.transformers.tvd (ligerd's objects)."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.transformers.tvd")
