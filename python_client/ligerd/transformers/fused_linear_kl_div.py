"""``LigerFusedLinearKLDivLoss`` with Liger-Kernel 0.8.5's constructor ``(reduction="batchmean",
ignore_index=-100, temperature=1.0, eps=1e-10, accum_dtype=None)`` and ``forward(student_input,
student_weight, target, shift_labels=None)``, and ``liger_fused_linear_kl_div``: KL(target ||
softmax(student_input @ student_weight.T / T)) with ``target`` the teacher's probabilities
[BT, V], without the student's full logits (ligerd.chunked_loss.distillation.fused_linear_kl_div)."""

from __future__ import annotations

from typing import Optional

import torch

from ligerd.chunked_loss.distillation import fused_linear_kl_div


def liger_fused_linear_kl_div(student_input, student_weight, target, shift_labels=None, reduction: str = "batchmean",
                              ignore_index: int = -100, temperature: float = 1.0, eps: float = 1e-10,
                              accum_dtype: Optional[torch.dtype] = None):
    return fused_linear_kl_div(student_input, student_weight, target, shift_labels, reduction, ignore_index,
                               temperature, eps, accum_dtype)


class LigerFusedLinearKLDivLoss(torch.nn.Module):
    def __init__(self, reduction: Optional[str] = "batchmean", ignore_index: int = -100, temperature: float = 1.0,
                 eps: float = 1e-10, accum_dtype: Optional[torch.dtype] = None):
        super().__init__()
        assert temperature != 0, "temperature cannot be 0."
        self.reduction = reduction
        self.temperature = temperature
        self.ignore_index = ignore_index
        self.eps = eps
        self.accum_dtype = accum_dtype

    def forward(self, student_input, student_weight, target, shift_labels=None):
        return fused_linear_kl_div(student_input, student_weight, target, shift_labels, self.reduction,
                                   self.ignore_index, self.temperature, self.eps, self.accum_dtype)

    def extra_repr(self):
        return (f"reduction={self.reduction}, ignore_index={self.ignore_index}, "
                f"temperature={self.temperature}, eps={self.eps}, accum_dtype={self.accum_dtype}")
