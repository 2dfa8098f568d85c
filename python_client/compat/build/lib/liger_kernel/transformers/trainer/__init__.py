"""``liger_kernel.transformers.trainer``: ligerd has no trainers; stand-ins."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), None, ("LigerORPOTrainer",))
