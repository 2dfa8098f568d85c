"""``liger_kernel.ops.grpo_loss`` (Axolotl's async GRPO trainer imports fused_selective_log_softmax):
stand-ins."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), None, (
    "GrpoLossFunction", "fused_selective_log_softmax"))
