"""``ligerd.chunked_loss``: Liger-Kernel 0.8.5's ``liger_kernel.chunked_loss`` name for name (the
alignment, RL and distillation losses through the LM head, never materialising the full logits),
on ligerd's executor: the logits and gradient GEMMs are ligerd's ``gemm`` op and the per-token
log-probs and their gradients ligerd's cross-entropy kernel, so local and remote dispatch both
work. See docs/chunked_loss.md (memory budget, what runs as torch ops, differences from Liger)."""

from ligerd.chunked_loss.distillation import (LigerFusedLinearCosineSimilarityFunction,  # noqa: F401
                                              LigerFusedLinearCosineSimilarityLoss, LigerFusedLinearJSDFunction,
                                              LigerFusedLinearJSDLoss)
from ligerd.chunked_loss.grpo import LigerFusedLinearGRPOFunction, LigerFusedLinearGRPOLoss  # noqa: F401
from ligerd.chunked_loss.kto import LigerFusedLinearKTOFunction, LigerFusedLinearKTOLoss  # noqa: F401
from ligerd.chunked_loss.preference import (LigerFusedLinearCPOFunction, LigerFusedLinearCPOLoss,  # noqa: F401
                                            LigerFusedLinearDPOFunction, LigerFusedLinearDPOLoss,
                                            LigerFusedLinearORPOFunction, LigerFusedLinearORPOLoss,
                                            LigerFusedLinearSimPOFunction, LigerFusedLinearSimPOLoss)
from ligerd.chunked_loss.selected_log_probs import (LigerFusedLinearSelectedLogProbs,  # noqa: F401
                                                    fused_linear_selected_log_probs)
from ligerd.chunked_loss.functional import (liger_fused_linear_cosine, liger_fused_linear_cpo,  # noqa: F401
                                            liger_fused_linear_dpo, liger_fused_linear_grpo,
                                            liger_fused_linear_jsd, liger_fused_linear_kto,
                                            liger_fused_linear_orpo, liger_fused_linear_simpo)

__all__ = [
    "LigerFusedLinearCosineSimilarityLoss", "LigerFusedLinearCPOLoss", "LigerFusedLinearDPOLoss",
    "LigerFusedLinearGRPOLoss", "LigerFusedLinearJSDLoss", "LigerFusedLinearKTOLoss", "LigerFusedLinearORPOLoss",
    "LigerFusedLinearSimPOLoss", "LigerFusedLinearSelectedLogProbs", "fused_linear_selected_log_probs",
    "liger_fused_linear_orpo", "liger_fused_linear_dpo", "liger_fused_linear_jsd", "liger_fused_linear_cosine",
    "liger_fused_linear_cpo", "liger_fused_linear_simpo", "liger_fused_linear_kto", "liger_fused_linear_grpo",
]
