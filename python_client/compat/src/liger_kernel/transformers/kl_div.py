"""``liger_kernel.transformers.kl_div``: the names of ligerd.transformers.kl_div (ligerd's objects)."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.transformers.kl_div")
