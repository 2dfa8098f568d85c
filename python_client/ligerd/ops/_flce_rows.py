"""What one fused linear cross-entropy sweep (chunked or sliced, see fused_linear_cross_entropy.py
and _flce_sliced.py) fills: the per-token outputs (loss rows, z-loss rows, predictions), block by
block, and the gradient buffers."""

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


def grad_buffers(x, W, grads: bool, need_dx: bool, need_dw: bool, need_db: bool, accum_dtype):
    """(dx, dW, db) for a sweep to write, None for each not asked for: dx like x (written whole),
    dW in accum_dtype or W's (written, then accumulated, per block: zeros when there are no
    tokens, so no block writes it), db zeros in accum_dtype or fp32 (accumulated)."""
    if not grads:
        return None, None, None
    dev = x.device
    dx = torch.empty_like(x, memory_format=torch.contiguous_format) if need_dx else None
    acc = accum_dtype if accum_dtype is not None else W.dtype
    dW = (torch.zeros if x.shape[0] == 0 else torch.empty)(W.shape, dtype=acc, device=dev) if need_dw else None
    db = torch.zeros(W.shape[0], dtype=accum_dtype or torch.float32, device=dev) if need_db else None
    return dx, dW, db
