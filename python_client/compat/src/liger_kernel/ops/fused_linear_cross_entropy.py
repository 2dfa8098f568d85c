"""``liger_kernel.ops.fused_linear_cross_entropy`` (Axolotl wraps its forward/backward when
torch_compile is on): stand-ins; ligerd's fused linear cross entropy is
liger_kernel.transformers.LigerFusedLinearCrossEntropyLoss."""

from liger_kernel import _shim

__getattr__, __dir__ = _shim.delegating_module(globals(), None, (
    "LigerFusedLinearCrossEntropyFunction", "fused_linear_cross_entropy_forward",
    "fused_linear_cross_entropy_backward"))
