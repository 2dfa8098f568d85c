"""RoPE (HF Llama "rotate_half") as torch custom ops: ``ligerd::rope_inplace`` (rotates q and k
in place) and ``ligerd::rope`` (writes fresh outputs, differentiable), with fake kernels.

    q_embed = q * cos + rotate_half(q) * sin,   rotate_half(x) = cat(-x[..., d/2:], x[..., :d/2])

and the same for k, in ONE launch for q and k. The backward is the transpose of that map (the
rotation by -theta), applied to dq and dk.

As in Liger-Kernel (LigerRopeFunction), eager mode rotates q and k in place and returns them (as
new tensor objects over the same memory), and the backward rotates dq and dk in place. Unlike
Liger it never copies: q and k in HF's layout (``view(bsz, seq, heads, hd).transpose(1, 2)`` of a
projection output) are read and written through their strides. The in-place mutation bumps q's
and k's version counters, so autograd reports (instead of silently miscomputing) any earlier op
that saved q or k for its backward. Out-of-place instead (fresh outputs; q and k untouched) where
in place is not legal or not wise: under torch.compile (a traced graph must not mutate its
inputs behind AOTAutograd's back; the compiler plans buffers itself), when q or k is a leaf that
requires grad or a view of one (torch forbids in-place ops there), when q and k share memory
(e.g. slices of one fused qkv projection), when either has elements sharing memory, or its last
dim is not contiguous (then it is copied first, as the kernels need stride 1 there). The backward
writes dq and dk in place when they are free of internal overlap and of each other, else fresh.

Partial rotary embeddings (cos/sin cover the first rotary_dim < head_dim; Phi-3 with a
partial_rotary_factor, Qwen3-Next, Qwen3.5, GLM-4V-MoE) rotate the strided views
``q[..., :rotary_dim]`` and ``k[..., :rotary_dim]`` with the same ops: ligerd.ops.rope_partial.
Qwen2-VL's multimodal RoPE (cos/sin per mrope section): ligerd.ops.rope_mrope.

Executor ops (kernels/ops/rope.cc), no scalars:
- rope_fwd: tensors [Q, K, COS, SIN, Q_out (may be Q), K_out (may be K)]
- rope_bwd: tensors [dQ, dK, COS, SIN, dQ_out (may be dQ), dK_out (may be dK)]
Q [B, Hq, S, D], K [B, Hk, S, D], COS/SIN [1 or B, S, D] (q's dtype or float32).
"""

from __future__ import annotations

from typing import Tuple

import torch

from ligerd.ops import _opdef
from ligerd.ops import rope_partial as _partial
from ligerd.ops._rope_kernels import (OP, _RopeInPlace, _contig_last, _leaf_requiring_grad,  # noqa: F401
                                      _writable_in_place, check_inputs, rope_inplace, rope_out)


# ---------------------------------------------------------------------------------------------
# Public entry point (what ligerd.transformers calls).


def rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                   sin: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """HF ``apply_rotary_pos_emb`` (rotate_half), q and k rotated in one launch; differentiable in
    q and k (cos and sin are constants, as in Liger). See the module docstring for when q and k
    are rotated in place. cos/sin covering only the first ``rotary_dim`` < head_dim of q and k:
    HF's partial rotary embedding (ligerd.ops.rope_partial), the rest passed through."""
    rd = _partial.rotary_dim_of(q, cos)
    if rd is not None:
        return _partial.partial_rotary_pos_emb(q, k, cos, sin, rd)
    cos, sin = check_inputs(q, k, cos, sin)
    if q.numel() + k.numel() == 0:
        return q, k
    if not _opdef.eager():  # compiled or traced: out of place (see the module docstring)
        return rope_out(_contig_last(q), _contig_last(k), cos, sin, False)
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
    if (_writable_in_place(q, k, cos, sin) and
            not (grad and (_leaf_requiring_grad(q) or _leaf_requiring_grad(k)))):
        if grad:
            return _RopeInPlace.apply(q, k, cos, sin)
        rope_inplace(q, k, cos, sin, False)
        return q, k
    return rope_out(_contig_last(q), _contig_last(k), cos, sin, False)


class LigerRopeFunction:
    """Liger's ``LigerRopeFunction.apply(q, k, cos, sin, position_ids=None, unsqueeze_dim=1)``:
    ``position_ids`` and ``unsqueeze_dim`` are accepted and ignored, as in Liger (cos and sin
    already hold the positions; the head axis is dim 1)."""

    @staticmethod
    def apply(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
        return rotary_pos_emb(q, k, cos, sin)

