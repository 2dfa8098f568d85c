"""``liger_kernel.chunked_loss.fused_linear_distillation`` (Axolotl's KD integration subclasses
LigerFusedLinearDistillationBase): a stand-in; a subclass can be defined, using it raises."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), None,
                                               ("LigerFusedLinearDistillationBase",))
