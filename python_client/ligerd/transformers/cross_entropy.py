"""``LigerCrossEntropyLoss`` with Liger-Kernel's constructor, returns and semantics, on ligerd's
cross-entropy kernel (ligerd.ops.cross_entropy)."""

from __future__ import annotations

from typing import Optional

import torch

from ligerd.ops.cross_entropy import cross_entropy
from ligerd.transformers.functional import _ce_result, check_loss_options


class LigerCrossEntropyLoss(torch.nn.Module):
    """Cross-entropy over [BT, V] logits and [BT] targets. Returns the loss, or a
    ``CrossEntropyOutput(loss, z_loss, token_accuracy, predicted_tokens)`` when any ``return_*``
    flag is set. The gradient is computed in the forward and written over the logits (eager)."""

    def __init__(self, weight: Optional[torch.FloatTensor] = None, ignore_index: int = -100,
                 lse_square_scale: float = 0.0, label_smoothing: float = 0.0, reduction: str = "mean",
                 softcap: Optional[float] = None, return_z_loss: bool = False,
                 return_token_accuracy: bool = False, return_predicted_tokens: bool = False):
        super().__init__()
        check_loss_options("LigerCrossEntropyLoss", label_smoothing, reduction, softcap)
        self.weight = weight
        self.ignore_index = ignore_index
        self.lse_square_scale = lse_square_scale
        self.label_smoothing = label_smoothing
        self.reduction = reduction
        self.softcap = softcap
        self.return_z_loss = return_z_loss
        self.return_token_accuracy = return_token_accuracy
        self.return_predicted_tokens = return_predicted_tokens

    def forward(self, _input: torch.Tensor, target: torch.Tensor):
        out = cross_entropy(_input, target, self.weight, self.ignore_index, self.lse_square_scale,
                            self.label_smoothing, self.reduction, self.softcap, self.return_z_loss,
                            self.return_token_accuracy, self.return_predicted_tokens)
        return _ce_result(out, self.return_z_loss, self.return_token_accuracy, self.return_predicted_tokens)
