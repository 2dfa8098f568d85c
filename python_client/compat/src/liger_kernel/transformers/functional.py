"""``liger_kernel.transformers.functional``: ligerd.transformers.functional's functions; Liger's
other functions and autograd Functions are stand-ins raising LigerdNotProvidedError on use."""

from liger_kernel import _shim

# Liger-Kernel's liger_kernel/transformers/functional.py top-level names (commit ead96b6).
LIGER_NAMES = (
    "LigerAttnResFunction", "LigerCrossEntropyFunction", "LigerDyTFunction",
    "LigerFusedAddRMSNormFunction", "LigerFusedLinearCrossEntropyFunction",
    "LigerFusedLinearJSDFunction", "LigerFusedNeighborhoodAttentionFunction",
    "LigerGELUMulFunction", "LigerGroupNormFunction", "LigerJSDFunction", "LigerKLDivLossFunction",
    "LigerLayerNormFunction", "LigerMHCCoeffsFunction", "LigerMHCPostResFunction",
    "LigerMHCPreFunction", "LigerModulatedRMSNormFunction", "LigerMultiTokenAttentionFunction",
    "LigerPolyNormFunction", "LigerQwen2VLMRopeFunction", "LigerReLUSquaredFunction",
    "LigerRMSNormFunction", "LigerRopeFunction", "LigerSiLUMulFunction", "LigerSoftmaxFunction",
    "LigerSparsemaxFunction", "LigerTVDLossFunction", "CrossEntropyOutput", "liger_cross_entropy",
    "liger_fused_linear_cross_entropy", "liger_fused_linear_jsd", "liger_geglu", "liger_group_norm",
    "liger_jsd", "liger_kl_div", "liger_sparsemax", "liger_multi_token_attention",
    "liger_fused_neighborhood_attention", "liger_tvd", "liger_layer_norm", "liger_qwen2vl_mrope",
    "liger_relu_squared", "liger_rms_norm", "liger_modulated_rms_norm", "liger_poly_norm",
    "liger_fused_add_rms_norm", "liger_rope", "liger_swiglu", "liger_softmax", "liger_dyt",
    "liger_mhc_coeffs", "liger_mhc_pre", "liger_mhc_post_res", "liger_mhc_apply", "liger_attn_res",
    "liger_mhc_forward",
)

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.transformers.functional",
                                               LIGER_NAMES)
