"""Cases of the vision towers' RoPE (transformers' ``apply_rotary_pos_emb_vision`` and ligerd's
``liger_rotary_pos_emb_vision``), shared by tests/python/test_rope_vision_wiring.py (the CPU
reference executor) and tests/gpu/test_rope_vision.py (the kernels): inputs laid out as the vision
attentions pass them, and the comparison of ligerd's function with transformers' own, called at
the same dtype, forward and backward.

Layouts of q and k (``Case.layout``):
  "qkv"      (seq, heads, d) ``unbind`` views of one fused projection, as Qwen2-VL ... GLM-4V's
             ``qkv(x).reshape(seq, 3, heads, -1).permute(1, 0, 2, 3).unbind(0)`` (strided, not dense);
  "dense"    (seq, heads, d) contiguous, q and k of their own (head counts may differ);
  "batched"  (batch, seq, heads, d) contiguous, as Muse-Glimmer's ``reshape(1, seq, -1, d)``.
cos/sin: random values (not a rotation: distinct halves and positions, so a wrong half, position
or head shows), (seq, d) or, ``cos_batched``, (batch, seq, d); float32 (Qwen's rotary embedding
computes them in fp32) or, ``cos_dtype="x"``, in q's dtype (Muse-Glimmer in bf16).

Tolerance, per element, of ligerd's result against transformers' at the same dtype: both compute
in float32 (float64 inputs too: transformers casts them to float32, and so does ligerd); with
scale = max|x| * max(|cos| + |sin|) over the call, transformers' three fp32 roundings (two products
and a sum) are each within 2^-24 * scale, and ligerd's one rounding (the CPU reference rounds the
exact value once; the kernel one fma) within 2^-24 * scale: ``2^-21 * scale`` bounds their
distance with a margin. A bf16 / fp16 output is then rounded by each: within one unit roundoff of
the value each, ``2 * u * |want|`` more. A wrong pairing, half or position is an O(1) error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

import torch

from ligerd.testing.reference.precision import TINY, U

K_FP32 = 2.0 ** -21


@dataclass(frozen=True)
class Case:
    seq: int
    hq: int
    hk: int
    d: int
    layout: str = "qkv"          # "qkv", "dense", "batched"
    batch: int = 1               # "batched" only
    cos_dtype: str = "fp32"      # "fp32" or "x" (q's dtype)
    cos_batched: bool = False    # "batched" only: cos/sin (batch, seq, d)

    def id(self) -> str:
        b = f"b{self.batch}" if self.layout == "batched" else ""
        return (f"{self.layout}{b}-s{self.seq}-h{self.hq}x{self.hk}-d{self.d}-cos_{self.cos_dtype}"
                + ("-cosb" if self.cos_batched else ""))


def make(case: Case, dtype, seed: int, device=None):
    """(leaves, qk(leaves) -> (q, k), cos, sin): leaves require grad; ``qk`` builds q and k from
    any leaves of those shapes (the same layout for ligerd's call and transformers')."""
    gen = torch.Generator(device=device or "cpu").manual_seed(seed)

    def randn(*shape, dt=dtype):
        return torch.randn(*shape, generator=gen, device=device).to(dt)

    s, d = case.seq, case.d
    if case.layout == "qkv":
        assert case.hq == case.hk
        leaves = [randn(s, 3 * case.hq * d).requires_grad_()]

        def qk(ls):
            q, k, _ = ls[0].reshape(s, 3, case.hq, d).permute(1, 0, 2, 3).unbind(0)
            return q, k
    elif case.layout == "dense":
        leaves = [randn(s, case.hq * d).requires_grad_(), randn(s, case.hk * d).requires_grad_()]

        def qk(ls):
            return ls[0].view(s, case.hq, d), ls[1].view(s, case.hk, d)
    else:
        b = case.batch
        leaves = [randn(b, s, case.hq * d).requires_grad_(), randn(b, s, case.hk * d).requires_grad_()]

        def qk(ls):
            return ls[0].view(b, s, case.hq, d), ls[1].view(b, s, case.hk, d)
    cdt = torch.float32 if case.cos_dtype == "fp32" or dtype == torch.float64 else dtype
    cshape = (case.batch, s, d) if case.cos_batched else (s, d)
    cos, sin = randn(*cshape, dt=cdt), randn(*cshape, dt=cdt)
    return leaves, qk, cos, sin


def _scale(x, cos, sin) -> float:
    if x.numel() == 0:
        return 0.0
    return float(x.detach().abs().max()) * float((cos.double().abs() + sin.double().abs()).max())


def tolerance(want: torch.Tensor, dtype, scale: float) -> torch.Tensor:
    u = U.get(dtype, 0.0) if dtype != torch.float32 else 0.0
    return 2 * u * want.detach().double().abs() + K_FP32 * scale + TINY.get(dtype, 0.0)


def run(fn: Callable, hf: Callable, case: Case, dtype, seed: int, device=None):
    """Calls ligerd's ``fn`` and transformers' ``hf`` on the same inputs; returns
    [(name, got, want, tol)] for both outputs and the gradients of the leaves (the same random
    upstream gradients), and the outputs of ``fn`` (for more checks by the caller)."""
    leaves, qk, cos, sin = make(case, dtype, seed, device)
    q, k = qk(leaves)
    q0, k0 = q.detach().clone(), k.detach().clone()
    got = fn(q, k, cos, sin)
    assert torch.equal(q, q0) and torch.equal(k, k0), "q and k must not be written"
    gen = torch.Generator(device=device or "cpu").manual_seed(seed + 1)
    dys = [torch.randn(g.shape, generator=gen, device=device).to(dtype) for g in got]
    ggot = torch.autograd.grad(got, leaves, [dy.clone() for dy in dys])
    leaves2 = [x.detach().clone().requires_grad_() for x in leaves]
    want = hf(*qk(leaves2), cos, sin)
    gwant = torch.autograd.grad(want, leaves2, dys)
    out = []
    for i, (g, w) in enumerate(zip(got, want)):
        out.append((f"out{i}", g, w.detach(), tolerance(w, dtype, _scale(leaves[0], cos, sin))))
    for i, (g, w) in enumerate(zip(ggot, gwant)):
        out.append((f"grad{i}", g, w, tolerance(w, dtype, _scale(dys[0], cos, sin))))
    return out, got, want


def check(results, ctx: str, max_differing: float = 0.01) -> None:
    """Every element within its tolerance; for a bf16 / fp16 result, at most ``max_differing`` of
    the elements differing from transformers' at all (both round a float32 value of the same
    product once: they differ only where the two fp32 values straddle a rounding boundary)."""
    from ligerd.testing.gpu import assert_close
    for name, got, want, tol in results:
        assert got.dtype == want.dtype and got.shape == want.shape, (
            f"{ctx}: {name} is {got.dtype} {tuple(got.shape)}, transformers' {want.dtype} "
            f"{tuple(want.shape)}")
        assert_close(name, got, want.double(), tol, ctx)
        if got.dtype in (torch.bfloat16, torch.float16) and got.numel():
            frac = float((got != want).double().mean())
            assert frac <= max_differing, f"{ctx}: {name}: {frac:.2%} of the elements differ"


def strides(t: torch.Tensor) -> Tuple[int, ...]:
    """t's strides over its dims of size > 1 (where a stride says anything about the layout)."""
    return tuple(st for st, n in zip(t.stride(), t.shape) if n > 1)


__all__ = ["Case", "K_FP32", "check", "make", "run", "strides", "tolerance"]
