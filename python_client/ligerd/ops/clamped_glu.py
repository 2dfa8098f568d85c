"""The clamped gated activation of GPT-OSS's and DeepSeek-V4's MoE experts as torch custom ops:
``ligerd::clamped_glu_fwd`` and ``ligerd::clamped_glu_bwd``, with fake (meta) kernels and
autograd, so eager mode, ``torch.compile(fullgraph=True)`` and FSDP/DDP all see ordinary tensors.

Of one ``[..., 2I]`` tensor x holding gate and up (``pairs=False``: the halves, gate first, as
``chunk(2, -1)``; ``pairs=True``: the even / odd columns, gate first, as ``x[..., ::2]``,
``x[..., 1::2]``):

    g = gate.clamp(max=limit)      u = up.clamp(-limit, limit)
    y = g * sigmoid(alpha * g) * (u + up_offset)            [..., I]

in fp32, rounded once to x's dtype. transformers' ``GptOssExperts._apply_gate`` is
``alpha=swiglu_alpha, limit=swiglu_limit, up_offset=1, pairs=True``;
``DeepseekV4Experts._apply_gate`` (SiLU) is ``alpha=1, limit=swiglu_limit, up_offset=0,
pairs=False``. The backward gives dx in x's layout with autograd's clamp gradients (zero where
the input was clamped, also at exactly +-limit, and for NaN), recomputing the activation from the
saved x (nothing else is saved). Liger-Kernel 0.8.5 has no such op: it leaves both experts to
transformers.

The executor ops (kernels/ops/clamped_glu.cc) take, with scalars [alpha, limit, up_offset, pairs]:
- clamped_glu_fwd: tensors [X, Y out]
- clamped_glu_bwd: tensors [dY, X, dX out]
"""

from __future__ import annotations

import math

import torch

from ligerd import _backend
from ligerd.ops import _opdef, _rows

OP = "clamped_glu"
_F32_MAX = 3.4028234663852886e38


def check_inputs(x, alpha, limit, up_offset) -> None:
    """Friendly checks before anything reaches C++ (which checks again): a CUDA float tensor
    (fp32, bf16, fp16) of 1 to 4 dims with an even last dim, finite alpha and up_offset, a
    limit >= 0 (inf: no clamp)."""
    _rows.check_float_tensor(OP, "x", x)
    if x.dim() < 1 or x.dim() > _rows.MAX_DIMS:
        _rows.fail(OP, f"x must have 1 to {_rows.MAX_DIMS} dimensions, got shape {tuple(x.shape)}")
    if x.shape[-1] % 2 != 0:
        _rows.fail(OP, f"x's last dim is {x.shape[-1]} (shape {tuple(x.shape)}): expected an even "
                       f"2I holding gate and up")
    for name, v in (("alpha", alpha), ("up_offset", up_offset)):
        if not isinstance(v, (int, float)) or not math.isfinite(v) or abs(v) > _F32_MAX:
            _rows.fail(OP, f"{name} must be a finite float, got {v!r}")
    if not isinstance(limit, (int, float)) or math.isnan(limit) or limit < 0 \
            or (math.isfinite(limit) and limit > _F32_MAX):
        _rows.fail(OP, f"limit must be a float >= 0 (inf: no clamp), got {limit!r}")


# ---------------------------------------------------------------------------------------------
# Custom ops on 2-D (rows, 2I) tensors with a contiguous last dim (rows at any pitch); the public
# wrapper flattens. Outputs are allocated contiguous.


def _scalars(alpha, limit, up_offset, pairs):
    return dict(alpha=float(alpha), limit=float(limit), up_offset=float(up_offset),
                pairs=1.0 if pairs else 0.0)


@_opdef.custom_op("clamped_glu_fwd")
def clamped_glu_fwd(x: torch.Tensor, alpha: float, limit: float, up_offset: float,
                    pairs: bool) -> torch.Tensor:
    y = x.new_empty((x.shape[0], x.shape[1] // 2))
    if y.numel() > 0:
        _backend.call("clamped_glu_fwd", X=x, Y=y, **_scalars(alpha, limit, up_offset, pairs))
    return y


@clamped_glu_fwd.register_fake
def _(x, alpha, limit, up_offset, pairs):
    return x.new_empty((x.shape[0], x.shape[1] // 2))


@_opdef.custom_op("clamped_glu_bwd")
def clamped_glu_bwd(dy: torch.Tensor, x: torch.Tensor, alpha: float, limit: float,
                    up_offset: float, pairs: bool) -> torch.Tensor:
    """dX ([rows, 2I], x's layout) from the forward's input x and dY ([rows, I])."""
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    if x.numel() > 0:
        _backend.call("clamped_glu_bwd", dY=dy, X=x, dX=dx, **_scalars(alpha, limit, up_offset, pairs))
    return dx


@clamped_glu_bwd.register_fake
def _(dy, x, alpha, limit, up_offset, pairs):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    x, alpha, limit, up_offset, pairs = inputs
    ctx.save_for_backward(x)
    ctx.args = (alpha, limit, up_offset, pairs)


def _backward(ctx, dy):
    (x,) = ctx.saved_tensors
    # dY can arrive at any layout (an expanded ones from .sum(), a transposed view): rows at one
    # pitch are read in place, anything else is copied.
    return (clamped_glu_bwd(_rows.as_rows(dy), x, *ctx.args), None, None, None, None)


clamped_glu_fwd.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# Public entry point (what ligerd.transformers calls).


def clamped_glu(x: torch.Tensor, alpha: float = 1.0, limit: float = math.inf,
                up_offset: float = 0.0, pairs: bool = False) -> torch.Tensor:
    """``g * sigmoid(alpha * g) * (u + up_offset)`` of a CUDA ``[..., 2I]`` tensor (fp32, bf16 or
    fp16) holding gate and up (module docstring), differentiable in x; the result is
    ``[..., I]`` in x's dtype (contiguous)."""
    check_inputs(x, alpha, limit, up_offset)
    out_shape = x.shape[:-1] + (x.shape[-1] // 2,)
    if x.numel() == 0:  # nothing to compute (and no (-1, 0) view of some shapes); keeps autograd
        return x[..., : x.shape[-1] // 2] * 0
    y = clamped_glu_fwd(_rows.as_rows(x), float(alpha), float(limit), float(up_offset), bool(pairs))
    return y.view(out_shape)


def gpt_oss_glu(gate_up: torch.Tensor, alpha: float, limit: float) -> torch.Tensor:
    """transformers' ``GptOssExperts._apply_gate``: interleaved gate/up, ``(up + 1) * glu``."""
    return clamped_glu(gate_up, alpha=alpha, limit=limit, up_offset=1.0, pairs=True)


def clamped_swiglu(gate_up: torch.Tensor, limit: float) -> torch.Tensor:
    """transformers' ``DeepseekV4Experts._apply_gate`` with SiLU: halves, ``silu(g) * u``."""
    return clamped_glu(gate_up, alpha=1.0, limit=limit, up_offset=0.0, pairs=False)
