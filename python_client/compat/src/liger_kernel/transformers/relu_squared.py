"""``liger_kernel.transformers.relu_squared``: the names of ligerd.transformers.relu_squared
(ligerd's objects)."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.transformers.relu_squared")
