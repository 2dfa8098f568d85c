"""``liger_kernel.ops``: Liger's Triton autograd Functions and forward/backward kernels. ligerd's
kernels are torch custom ops in ``ligerd.ops`` with other signatures, so every Liger name here is
a stand-in raising LigerdNotProvidedError on use (the modules in liger_kernel.transformers are the
supported way in)."""

from liger_kernel import _shim

# Liger-Kernel's liger_kernel/ops/__init__.py public names (commit ead96b6).
LIGER_NAMES = (
    "LigerAttnResFunction", "attn_res_backward", "attn_res_forward", "LigerCrossEntropyFunction",
    "cross_entropy_backward", "cross_entropy_forward", "LigerDyTFunction",
    "LigerEmbeddingFunction", "LigerFusedAddRMSNormFunction", "fused_add_rms_norm_backward",
    "fused_add_rms_norm_forward", "LigerFusedLinearCrossEntropyFunction",
    "fused_linear_cross_entropy_backward", "fused_linear_cross_entropy_forward",
    "LigerFusedLinearJSDFunction", "fused_linear_jsd_backward", "fused_linear_jsd_forward",
    "LigerFusedLinearScaledCrossEntropyFunction", "LigerFusedMoEFunction",
    "LigerFusedNeighborhoodAttentionFunction", "LigerGELUMulFunction", "geglu_backward",
    "geglu_forward", "LigerGroupNormFunction", "group_norm_backward", "group_norm_forward",
    "GrpoLossFunction", "LigerJSDFunction", "jsd_backward", "jsd_forward",
    "LigerKLDivLossFunction", "LigerLayerNormFunction", "layer_norm_backward",
    "layer_norm_forward", "LigerLlama4RopeFunction", "LigerMHCCoeffsFunction",
    "LigerMHCPostResFunction", "LigerMHCPreFunction", "LigerMLPFunction",
    "LigerModulatedRMSNormFunction", "modulated_rms_norm_backward", "modulated_rms_norm_forward",
    "LigerMultiTokenAttentionFunction", "LigerPolyNormFunction", "poly_norm_backward",
    "poly_norm_forward", "LigerQwen2VLMRopeFunction", "LigerReLUSquaredFunction",
    "relu_squared_backward", "relu_squared_forward", "LigerRMSNormFunction", "rms_norm_backward",
    "rms_norm_forward", "LigerRopeFunction", "rope_backward", "rope_forward",
    "LigerSoftmaxFunction", "LigerSparsemaxFunction", "LigerFusedGateUpSiLUMulFunction",
    "LigerSiLUMulFunction", "swiglu_backward", "swiglu_forward", "LigerTiledMLPFunction",
    "apply_tiled_mlp", "LigerTVDLossFunction", "LigerVocabParallelCEFunction",
)

__getattr__, __dir__ = _shim.delegating_module(globals(), None, LIGER_NAMES)
