"""``LigerJSD`` and ``liger_jsd`` with Liger-Kernel 0.8.5's constructor, defaults and semantics, on
ligerd's kernels (ligerd.ops.jsd)."""

from __future__ import annotations

from typing import Optional

import torch

from ligerd.ops.jsd import jsd as _jsd


class LigerJSD(torch.nn.Module):
    r"""The generalised Jensen-Shannon divergence of the student ``log_q`` (the input, [BT, V]
    log-probabilities) and the teacher ``log_p``:
    ``beta * KL(P || M) + (1 - beta) * KL(Q || M)``, ``M = beta * P + (1 - beta) * Q``; beta 0 is
    the forward KL(P || Q) and beta 1 the reverse KL(Q || P) (Liger's special cases). Rows whose
    ``shift_labels`` entry is ``ignore_index`` are left out, and the sum is divided by the rows
    kept. Returns a scalar in log_q's dtype; the gradient (computed in the forward) reaches log_q
    only."""

    def __init__(self, beta: float = 0.5, ignore_index: int = -100):
        super().__init__()
        self.beta = beta
        self.ignore_index = ignore_index

    def forward(self, log_q: torch.Tensor, log_p: torch.Tensor, shift_labels: Optional[torch.LongTensor] = None):
        return _jsd(log_q, log_p, shift_labels, self.beta, self.ignore_index)


def liger_jsd(input, target, shift_labels=None, beta: float = 0.5, ignore_index: int = -100):
    """Liger's functional form of LigerJSD."""
    return _jsd(input, target, shift_labels, beta, ignore_index)


__all__ = ["LigerJSD", "liger_jsd"]
