"""``liger_kernel.transformers.model.loss_utils`` (Axolotl imports LigerForCausalLMLoss here):
ligerd.transformers.model.loss_utils's names."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.transformers.model.loss_utils",
                                               ("LigerForCausalLMLoss", "fixed_fused_linear_cross_entropy",
                                                "unpack_cross_entropy_result"))
