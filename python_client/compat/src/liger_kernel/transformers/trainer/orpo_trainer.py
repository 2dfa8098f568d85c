"""``liger_kernel.transformers.trainer.orpo_trainer`` (Axolotl imports _FSDPForwardRedirection
here): ligerd has no ORPO trainer; stand-ins."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), None,
                                               ("LigerORPOTrainer", "_FSDPForwardRedirection"))
