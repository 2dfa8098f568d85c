"""Partial rotary embeddings on ligerd's RoPE kernel: HF's ``apply_rotary_pos_emb`` of the models
whose cos/sin cover only the first ``rotary_dim`` of the head dimension (Phi-3 / Phi-4-mini with
``partial_rotary_factor``, Qwen3-Next, Qwen3.5 (+MoE), GLM-4V-MoE's text model):

    rotary_dim = cos.shape[-1]
    q_embed = cat([q[..., :rotary_dim] * cos + rotate_half(q[..., :rotary_dim]) * sin,
                   q[..., rotary_dim:]], -1)

and the same for k (rotate_half over the rotary part only; the rest passes through unchanged).
With rotary_dim == head_dim this is the full RoPE of ligerd.ops.rope.

No kernel of its own: the rotary parts ``q[..., :rotary_dim]`` and ``k[..., :rotary_dim]`` are
strided views (row pitch head_dim, last dim contiguous), which the rope kernels read and write
through their strides (kernels/ops/rope.cc takes any batch/head/seq strides), so the rotary part
is rotated where it lies and nothing is copied:

- in place (eager, as ligerd.ops.rope decides for the full RoPE): the rotary part of q and k is
  rotated in place and q, k are returned (the pass-through part is never touched). The backward
  rotates the rotary part of dq, dk in place (by -theta) and passes the rest through.
- out of place (torch.compile, leaf inputs, q and k sharing memory, a non-contiguous last dim):
  ``ligerd::rope`` on the two views gives fresh rotary parts, concatenated with the pass-through
  parts (one copy of those, as transformers' own ``torch.cat``); autograd of the slice and the
  cat is torch's.

The interleaved partial RoPE of GLM-4 / GLM-4V (pairs (2i, 2i+1) rotated, cos/sin
repeat-interleaved) is another rotation: ligerd.ops.rope_interleaved computes it with the same
kernel on de-interleaved copies.
"""

from __future__ import annotations

from typing import Tuple

import torch

from ligerd.ops import _opdef
from ligerd.ops import _rope_kernels as _rope


def rotary_dim_of(q, cos):
    """The rotary dimension when cos/sin cover less than q's head dimension (a partial RoPE), else
    None (the full RoPE path and its checks handle everything else, malformed inputs included)."""
    if not (isinstance(q, torch.Tensor) and isinstance(cos, torch.Tensor)) or q.dim() != 4 \
            or cos.dim() == 0:
        return None
    rd = cos.shape[-1]
    return rd if rd < q.shape[-1] else None


def _check(q, k, cos, sin, rd: int):
    hd = q.shape[-1]
    if rd <= 0 or rd % 2:
        _rope._fail(f"the rotary dimension (cos/sin's last dim) must be even and > 0, got {rd} "
                    f"(head_dim {hd}); it is rotated as two halves")
    if not isinstance(k, torch.Tensor) or k.dim() != 4 or k.shape[-1] != hd:
        shape = tuple(k.shape) if isinstance(k, torch.Tensor) else type(k).__name__
        _rope._fail(f"k must be (bsz, n_kv_head, seq, {hd}) with q's head_dim, got {shape}")
    if isinstance(sin, torch.Tensor) and sin.dim() > 0 and sin.shape[-1] != rd:
        _rope._fail(f"cos and sin must have the same shape, got {tuple(cos.shape)} and "
                    f"{tuple(sin.shape)}")
    return _rope.check_inputs(q[..., :rd], k[..., :rd], cos, sin)


def _out_of_place(q, k, cos, sin, rd: int):
    qr, kr = _rope.rope_out(_rope._contig_last(q[..., :rd]), _rope._contig_last(k[..., :rd]),
                            cos, sin, False)
    return torch.cat([qr, q[..., rd:]], dim=-1), torch.cat([kr, k[..., rd:]], dim=-1)


def _grads(dq, dk, cos, sin, in_place: bool):
    """(dq, dk) with their rotary parts rotated back (-theta) and the rest passed through; None
    stays None. In place on dq/dk's rotary parts where legal, else fresh tensors."""
    if dq is None and dk is None:
        return None, None
    rd = cos.shape[-1]
    dq = None if dq is None else _rope._contig_last(dq)
    dk = None if dk is None else _rope._contig_last(dk)
    gq, gk = _rope._heads_view(dq, dk), _rope._heads_view(dk, dq)
    gqr, gkr = gq[..., :rd], gk[..., :rd]
    if in_place and _rope._writable_in_place(gqr, gkr, cos, sin):
        _rope.rope_inplace(gqr, gkr, cos, sin, True)
        rq, rk = gq, gk
    else:
        oq, ok = _rope.rope_out(gqr, gkr, cos, sin, True)
        rq, rk = torch.cat([oq, gq[..., rd:]], dim=-1), torch.cat([ok, gk[..., rd:]], dim=-1)
    return (None if dq is None else rq), (None if dk is None else rk)


class _PartialRopeInPlace(torch.autograd.Function):
    """Eager, differentiable, in place: forward rotates the rotary parts of q and k where they lie
    and returns q and k; backward does the same to dq and dk (ligerd.ops.rope._RopeInPlace over
    the first rotary_dim of the head dimension)."""

    @staticmethod
    def forward(ctx, q, k, cos, sin):
        rd = cos.shape[-1]
        _rope.rope_inplace(q[..., :rd], k[..., :rd], cos, sin, False)
        ctx.save_for_backward(cos, sin)
        ctx.set_materialize_grads(False)
        return q, k

    @staticmethod
    def backward(ctx, dq, dk):
        cos, sin = ctx.saved_tensors
        dq2, dk2 = _grads(dq, dk, cos, sin, in_place=True)
        return dq2, dk2, None, None


def partial_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                           rd: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """HF's partial-rotary ``apply_rotary_pos_emb`` (module docstring) for cos/sin of last dim
    ``rd`` < head_dim; differentiable in q and k (cos and sin are constants, as in Liger)."""
    cos, sin = _check(q, k, cos, sin, rd)
    if q.numel() + k.numel() == 0:
        return q, k
    if not _opdef.eager():  # compiled or traced: out of place (ligerd.ops.rope's docstring)
        return _out_of_place(q, k, cos, sin, rd)
    qr, kr = q[..., :rd], k[..., :rd]
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
    if (_rope._writable_in_place(qr, kr, cos, sin) and
            not (grad and (_rope._leaf_requiring_grad(q) or _rope._leaf_requiring_grad(k)))):
        if grad:
            return _PartialRopeInPlace.apply(q, k, cos, sin)
        _rope.rope_inplace(qr, kr, cos, sin, False)
        return q, k
    return _out_of_place(q, k, cos, sin, rd)


__all__ = ["partial_rotary_pos_emb", "rotary_dim_of"]
