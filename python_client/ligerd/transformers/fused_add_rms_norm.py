"""``LigerFusedAddRMSNorm`` with Liger-Kernel's constructor and semantics, on ligerd's kernels."""

from __future__ import annotations

import torch
import torch.nn as nn

from ligerd.ops.fused_add_rms_norm import fused_add_rms_norm
from ligerd.ops.rms_norm import casting_mode_id


class LigerFusedAddRMSNorm(nn.Module):
    """``forward(hidden_states, residual) -> (normed, new_residual)`` with
    ``new_residual = hidden_states + residual`` and ``normed = RMSNorm(new_residual)``: the
    pre-norm block's ``residual + h`` and the next norm in one pass over memory.

    Args (as in Liger-Kernel): hidden_size, eps, offset (added to the weight), casting_mode
    (``"llama"``, ``"gemma"``, ``"none"``: see LigerRMSNorm), init_fn (``"ones"``/``"zeros"``),
    in_place (write the input gradient over dY in the backward; eager mode only).
    """

    def __init__(self, hidden_size, eps=1e-6, offset=0.0, casting_mode="llama", init_fn="ones",
                 in_place=False):
        super().__init__()
        if init_fn not in ("ones", "zeros"):
            raise ValueError(f"init_fn must be either 'ones' or 'zeros', got {init_fn!r}")
        casting_mode_id(casting_mode)  # reject an unknown mode at construction
        self.weight = nn.Parameter(torch.ones(hidden_size) if init_fn == "ones" else torch.zeros(hidden_size))
        self.variance_epsilon, self.offset, self.casting_mode, self.in_place = (eps, offset, casting_mode, in_place)

    def forward(self, hidden_states, residual):
        return fused_add_rms_norm(hidden_states, residual, self.weight, self.variance_epsilon,
                                  offset=self.offset, casting_mode=self.casting_mode,
                                  in_place=self.in_place)

    def extra_repr(self):
        return (f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}, offset={self.offset}, "
                f"in_place={self.in_place}")
