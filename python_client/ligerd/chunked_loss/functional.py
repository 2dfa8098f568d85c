"""Liger-Kernel's ``liger_kernel.chunked_loss.functional``: ``liger_fused_linear_<loss> =
<Function>.apply``, positional arguments in Liger's order."""

from ligerd.chunked_loss.distillation import (LigerFusedLinearCosineSimilarityFunction,
                                              LigerFusedLinearJSDFunction)
from ligerd.chunked_loss.grpo import LigerFusedLinearGRPOFunction
from ligerd.chunked_loss.kto import LigerFusedLinearKTOFunction
from ligerd.chunked_loss.preference import (LigerFusedLinearCPOFunction, LigerFusedLinearDPOFunction,
                                            LigerFusedLinearORPOFunction, LigerFusedLinearSimPOFunction)
from ligerd.chunked_loss.selected_log_probs import fused_linear_selected_log_probs

liger_fused_linear_orpo = LigerFusedLinearORPOFunction.apply
liger_fused_linear_dpo = LigerFusedLinearDPOFunction.apply
liger_fused_linear_jsd = LigerFusedLinearJSDFunction.apply
liger_fused_linear_cosine = LigerFusedLinearCosineSimilarityFunction.apply
liger_fused_linear_cpo = LigerFusedLinearCPOFunction.apply
liger_fused_linear_simpo = LigerFusedLinearSimPOFunction.apply
liger_fused_linear_kto = LigerFusedLinearKTOFunction.apply
liger_fused_linear_grpo = LigerFusedLinearGRPOFunction.apply

__all__ = ["liger_fused_linear_orpo", "liger_fused_linear_dpo", "liger_fused_linear_jsd",
           "liger_fused_linear_cosine", "liger_fused_linear_cpo", "liger_fused_linear_simpo",
           "liger_fused_linear_kto", "liger_fused_linear_grpo", "fused_linear_selected_log_probs"]
