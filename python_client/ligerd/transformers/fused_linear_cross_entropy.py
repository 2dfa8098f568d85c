"""``LigerFusedLinearCrossEntropyLoss`` with Liger-Kernel's constructor, ``forward(lin_weight,
_input, target, bias=None)`` (weight first) and returns, on ligerd.ops.fused_linear_cross_entropy."""

from __future__ import annotations

from typing import Optional

import torch

from ligerd.ops.fused_linear_cross_entropy import fused_linear_cross_entropy
from ligerd.transformers.functional import _ce_result, check_loss_options


class LigerFusedLinearCrossEntropyLoss(torch.nn.Module):
    """Cross-entropy of ``_input @ lin_weight.T (+ bias)`` without the full logits. Returns the
    loss (fp32), or a ``CrossEntropyOutput`` when any ``return_*`` flag is set."""

    def __init__(self, ce_weight: Optional[torch.FloatTensor] = None, ignore_index: int = -100,
                 lse_square_scale: float = 0.0, label_smoothing: float = 0.0, reduction: str = "mean",
                 softcap: Optional[float] = None, return_z_loss: bool = False,
                 accum_dtype: Optional[torch.dtype] = None, use_token_scaling: bool = False,
                 return_token_accuracy: bool = False, return_predicted_tokens: bool = False):
        super().__init__()
        check_loss_options("LigerFusedLinearCrossEntropyLoss", label_smoothing, reduction, softcap)
        self.ce_weight = ce_weight
        self.ignore_index = ignore_index
        self.lse_square_scale = lse_square_scale
        self.label_smoothing = label_smoothing
        self.reduction = reduction
        self.softcap = softcap
        self.return_z_loss = return_z_loss
        self.accum_dtype = accum_dtype
        self.use_token_scaling = use_token_scaling
        self.return_token_accuracy = return_token_accuracy
        self.return_predicted_tokens = return_predicted_tokens

    def forward(self, lin_weight, _input, target, bias=None):
        out = fused_linear_cross_entropy(_input, lin_weight, target, bias, self.ce_weight, self.ignore_index,
                                         self.lse_square_scale, self.label_smoothing, self.reduction,
                                         self.softcap, self.return_z_loss, self.accum_dtype,
                                         self.use_token_scaling, self.return_token_accuracy,
                                         self.return_predicted_tokens)
        return _ce_result(out, self.return_z_loss, self.return_token_accuracy, self.return_predicted_tokens)
