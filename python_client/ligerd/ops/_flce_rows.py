"""The per-token outputs of one fused linear cross-entropy sweep (chunked or sliced, see
fused_linear_cross_entropy.py and _flce_sliced.py): the loss rows, the z-loss rows and the
predictions, filled block by block."""

from __future__ import annotations

import torch


class SweepRows:
    """loss: fp32 [BT]; z: fp32 [BT] when asked for, else empty; pred: int64 [BT] when asked for,
    else empty."""

    def __init__(self, bt: int, device, want_z: bool, want_pred: bool):
        self.want_z, self.want_pred = want_z, want_pred
        self.loss = torch.empty(bt, dtype=torch.float32, device=device)
        self.z = torch.empty(bt if want_z else 0, dtype=torch.float32, device=device)
        self.pred = torch.empty(bt if want_pred else 0, dtype=torch.int64, device=device)

    def put(self, s: int, e: int, loss, z, pred) -> None:
        """Rows [s, e) from one block's results."""
        self.loss[s:e] = loss
        if self.want_z:
            self.z[s:e] = z
        if self.want_pred:
            self.pred[s:e] = pred
