"""``LigerTVDLoss`` and ``liger_tvd`` with Liger-Kernel 0.8.5's constructor, defaults and semantics,
on ligerd's kernels (ligerd.ops.tvd)."""

from __future__ import annotations

import torch.nn as nn

from ligerd.ops.tvd import tvd as _tvd


class LigerTVDLoss(nn.Module):
    """Total variation distance ``0.5 * |p - q|`` of two [BT, V] distributions, reduced by
    ``reduction`` ("batchmean": / rows kept, "mean": / (rows kept * V), "sum", "none"); rows whose
    ``shift_labels`` entry is ``ignore_index`` are left out. fp32 result; the gradient (computed in
    the forward) reaches p only."""

    def __init__(self, reduction="batchmean", ignore_index: int = -100):
        super().__init__()
        self.reduction = reduction
        self.ignore_index = ignore_index

    def forward(self, p, q, shift_labels=None):
        return _tvd(p, q, shift_labels, self.reduction, self.ignore_index)


def liger_tvd(input, target, shift_labels=None, reduction: str = "mean", ignore_index: int = -100):
    """Liger's functional form (its default reduction is "mean", the module's "batchmean")."""
    return _tvd(input, target, shift_labels, reduction, ignore_index)


__all__ = ["LigerTVDLoss", "liger_tvd"]
