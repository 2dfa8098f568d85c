"""Float64 reference for LayerNorm (kernels/ops/layer_norm.cuh, Liger-Kernel's semantics), with
per-element error scales as in rms_norm.py beside it.

forward:  mean = sum(x)/N, var = sum((x - mean)^2)/N, rstd = 1/sqrt(var + eps),
          xhat = (x - mean) * rstd, y = xhat * w + b   (w = 1, b = 0 when absent)
backward: wdy = w * dy, c1 = sum(xhat * wdy)/N, c2 = sum(wdy)/N, dx = (wdy - (xhat*c1 + c2)) * rstd,
          dw = sum over rows of dy * xhat, db = sum over rows of dy

The kernels compute all of this in fp32 from x, w, b, dy as stored (the reference uses the same
stored values, exactly, in float64) and round each output once. The "scale" of a result is the
sum of the magnitudes of the terms behind it: fp32 rounding and summation-order differences
move a result by a small multiple of 2^-24 times that scale, not times |result| (which can be ~0
after cancellation, e.g. dx).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class FwdRef:
    y: torch.Tensor
    y_scale: torch.Tensor
    mean: torch.Tensor
    rstd: torch.Tensor


@dataclass
class BwdRef:
    dx: torch.Tensor
    dx_scale: torch.Tensor
    dw: Optional[torch.Tensor]
    dw_scale: Optional[torch.Tensor]
    db: Optional[torch.Tensor]
    db_scale: Optional[torch.Tensor]


def _stats(x64: torch.Tensor, eps: float):
    mean = x64.mean(dim=-1, keepdim=True)
    xc = x64 - mean
    var = (xc * xc).mean(dim=-1, keepdim=True)
    return mean, torch.rsqrt(var + eps)


def forward(x: torch.Tensor, w: Optional[torch.Tensor], b: Optional[torch.Tensor], eps: float) -> FwdRef:
    """x: (rows, N) in any float dtype; float64 results on x's device."""
    x64 = x.double()
    mean, rstd = _stats(x64, eps)
    xhat = (x64 - mean) * rstd
    # |x| + |mean| rather than |x - mean|: the fp32 mean's own error moves every xhat by
    # ~u * |mean| * rstd, whatever the centred value.
    scale = (x64.abs() + mean.abs()) * rstd
    y = xhat
    if w is not None:
        y = y * w.double()
        scale = scale * w.double().abs()
    if b is not None:
        y = y + b.double()
        scale = scale + b.double().abs()
    return FwdRef(y=y, y_scale=scale, mean=mean.squeeze(-1), rstd=rstd.squeeze(-1))


def backward(dy: torch.Tensor, x: torch.Tensor, w: Optional[torch.Tensor], eps: float) -> BwdRef:
    n = x.shape[-1]
    x64 = x.double()
    dy64 = dy.double()
    mean, rstd = _stats(x64, eps)
    xhat = (x64 - mean) * rstd
    wdy = dy64 if w is None else dy64 * w.double()
    c1 = (xhat * wdy).sum(dim=-1, keepdim=True) / n
    c2 = wdy.sum(dim=-1, keepdim=True) / n
    dx = (wdy - (xhat * c1 + c2)) * rstd
    # As in forward(): the kernels' xhat carries the fp32 mean's rounding (half an ulp of |mean|,
    # times rstd) whatever |x - mean| is, so its scale is (|x| + |mean|) * rstd, not |xhat|.
    # (Found on the H100: one fp32 row whose x sits near its mean, dW = dy * xhat off by 7e-5
    # relative, = 2^-25 * |mean| * rstd * |dy|.)
    xs = (x64.abs() + mean.abs()) * rstd
    c1s = (xs * wdy.abs()).sum(dim=-1, keepdim=True) / n
    c2s = wdy.abs().sum(dim=-1, keepdim=True) / n
    dx_scale = (wdy.abs() + xs * c1s + c2s) * rstd
    terms = dy64 * xhat
    return BwdRef(dx=dx, dx_scale=dx_scale, dw=terms.sum(dim=0), dw_scale=(dy64.abs() * xs).sum(dim=0),
                  db=dy64.sum(dim=0), db_scale=dy64.abs().sum(dim=0))
