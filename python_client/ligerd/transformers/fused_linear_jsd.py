"""``LigerFusedLinearJSD`` with Liger-Kernel 0.8.5's constructor ``(jsd_beta=0.5, ignore_index=-100,
temperature=1.0, accum_dtype=None)`` and ``forward(student_input, student_weight, teacher_input,
teacher_weight, shift_labels)``, and ``liger_fused_linear_jsd``: the generalised JSD between the
student's and the teacher's tempered distributions through their LM heads, never materialising
either's full logits (ligerd.chunked_loss.distillation.fused_linear_jsd)."""

from __future__ import annotations

from typing import Optional

import torch

from ligerd.chunked_loss.distillation import fused_linear_jsd


def liger_fused_linear_jsd(student_input, student_weight, teacher_input, teacher_weight, shift_labels=None,
                           jsd_beta: float = 0.5, ignore_index: int = -100, temperature: float = 1.0,
                           accum_dtype: Optional[torch.dtype] = None):
    return fused_linear_jsd(student_input, student_weight, teacher_input, teacher_weight, shift_labels, jsd_beta,
                            ignore_index, temperature, accum_dtype)


class LigerFusedLinearJSD(torch.nn.Module):
    """beta 0: KL(teacher || student); 1: KL(student || teacher); between: the generalised JSD.
    The loss (fp32) is summed over tokens whose label is not ``ignore_index`` and divided by their
    count (all tokens without labels)."""

    def __init__(self, jsd_beta=0.5, ignore_index=-100, temperature=1.0, accum_dtype: Optional[torch.dtype] = None):
        super().__init__()
        assert temperature != 0, "temperature cannot be 0."
        self.jsd_beta = jsd_beta
        self.temperature = temperature
        self.ignore_index = ignore_index
        self.accum_dtype = accum_dtype

    def forward(self, student_input, student_weight, teacher_input, teacher_weight,
                shift_labels: Optional[torch.LongTensor]):
        return fused_linear_jsd(student_input, student_weight, teacher_input, teacher_weight, shift_labels,
                                self.jsd_beta, self.ignore_index, self.temperature, self.accum_dtype)
