"""The op cases the GPU fault suite's clients run (tests/faults/faults_gpu.py --worker): each case
runs one ligerd op, forward and backward, on fresh random inputs of a fixed shape and checks every
output against a float64 torch reference. A result outside its tolerance is a silent result (a
wrong answer with no error); an exception from ligerd is an error.

The elementwise tolerances are the worst-case bounds of the op's own GPU tests
(tests/gpu/test_<op>.py explains each), so a correct kernel never exceeds them, however many
random draws a soak makes; the fused loss's are norm-wise, with a wide margin:
- rms_norm (llama casting, offset 0, a weight in X's dtype): the reference's fwd_tol / dx_tol /
  dw_tol (ligerd.testing.reference.rms_norm, explained in tests/gpu/test_rms_norm.py).
- swiglu: 2u|ref| + 1e-5 * scale + tiny (tests/gpu/test_glu.py: one final rounding, fp32 math).
- rope: u|ref| + 2^-21 * scale (+ fp16 tiny), u = 0 for fp32 outputs (tests/gpu/test_rope.py).
- cross_entropy (mean, ignore_index -100): loss 2u|ref| + 1e-5 (relative and absolute), the
  gradient written over the logits 4u|g| + 3e-5 * max|g| of its row + tiny
  (tests/gpu/test_cross_entropy.py).
- fused linear cross-entropy: norm-wise ||got - ref|| / ||ref|| <= 2^-6 for bf16 (the logits and
  d logits are held in bf16, each rounded once: 2^-9 relative, random across the sums;
  tests/gpu/test_fused_linear_cross_entropy.py's bound is about one ulp, 2^-8) and 1e-4 for fp32
  (fp32 GEMMs without TF32: fp32 roundoff over the sums, orders of magnitude below), for the
  loss, dX and dW.
u is the unit roundoff of the output dtype (bf16 2^-8, fp32 2^-24). A memory mix-up between
clients (another process's tensor, a stale mapping, an unwritten output) is an O(1) relative error:
far outside every bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F

from ligerd.testing.reference import rms_norm as rms_ref
from ligerd.testing.reference.precision import TINY, U
from ligerd.transformers import (liger_cross_entropy, liger_fused_linear_cross_entropy, liger_rms_norm,
                                 liger_rope, liger_swiglu)

DEV = "cuda"  # the CPU test (tests/python/test_faults_gpu_script.py) sets "cpu" and a reference executor
EPS = 1e-6
IGNORE = -100
ROPE_K = 2.0 ** -21
ROPE_U = {torch.float32: 0.0, torch.bfloat16: 2.0 ** -8}
FLCE_BOUND = {torch.float32: 1e-4, torch.bfloat16: 2.0 ** -6}


def sync() -> None:
    """Waits for the ops (remote ones too: their results are read next)."""
    if DEV == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------
# comparisons: each returns None when the output is good, else what is wrong (one line)

def check_elementwise(name: str, got: torch.Tensor, ref64: torch.Tensor, tol: torch.Tensor) -> Optional[str]:
    """|got - ref64| <= tol everywhere, every element finite, shapes equal."""
    got64 = got.detach().double().reshape(ref64.shape) if got.numel() == ref64.numel() else None
    if got64 is None:
        return f"{name}: {got.numel()} elements, the reference has {ref64.numel()}"
    finite = torch.isfinite(got64)
    if not bool(finite.all()):
        return f"{name}: {int((~finite).sum())} of {got64.numel()} elements not finite"
    over = (got64 - ref64).abs() - tol
    if bool((over > 0).any()):
        i = int(over.flatten().argmax())
        g, r, t = got64.flatten()[i].item(), ref64.flatten()[i].item(), tol.flatten()[i].item()
        return (f"{name}: {int((over > 0).sum())} of {over.numel()} elements out of tolerance; worst: "
                f"got {g:.9g}, ref {r:.9g}, tol {t:.3g}")
    return None


def check_normwise(name: str, got: torch.Tensor, ref64: torch.Tensor, bound: float) -> Optional[str]:
    """||got - ref64|| / ||ref64|| <= bound, every element finite."""
    got64 = got.detach().double().reshape(ref64.shape)
    if not bool(torch.isfinite(got64).all()):
        return f"{name}: not finite"
    err = float((got64 - ref64).norm() / ref64.norm().clamp_min(1e-300))
    return None if err <= bound else f"{name}: norm-wise relative error {err:.3g} > {bound:.3g}"


# ------------------------------------------------------------------------------------------
# the cases: run(gen) -> (outputs checked, problems)

def rms_norm_case(shape, dtype, gen):
    n = shape[-1]
    x = torch.randn(shape, device=DEV, generator=gen).to(dtype)
    w = (1 + 0.1 * torch.randn(n, device=DEV, generator=gen)).to(dtype)
    dy = torch.randn(shape, device=DEV, generator=gen).to(dtype)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = liger_rms_norm(xr, wr, EPS, 0.0, "llama", True)
    y.backward(dy.clone())
    sync()
    x2, dy2 = x.reshape(-1, n), dy.reshape(-1, n)
    f = rms_ref.forward(x2, w, EPS, 0.0, rms_ref.LLAMA)
    b = rms_ref.backward(dy2, x2, w, EPS, 0.0, rms_ref.LLAMA)
    problems = [check_elementwise("Y", y, f.y, rms_ref.fwd_tol(dtype, "llama", f, rms_ref.wmax(w, 0.0))),
                check_elementwise("dX", xr.grad, b.dx, rms_ref.dx_tol(dtype, "llama", b)),
                check_elementwise("dW", wr.grad, b.dw, rms_ref.dw_tol(dtype, dtype, "llama", b))]
    return 3, problems


def swiglu_case(shape, dtype, gen):
    a0 = (3 * torch.randn(shape, device=DEV, generator=gen)).to(dtype)
    b0 = (3 * torch.randn(shape, device=DEV, generator=gen)).to(dtype)
    dc = torch.randn(shape, device=DEV, generator=gen).to(dtype)
    pa, pb = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    c = liger_swiglu(pa * 1, pb * 1)  # non-leaf, like gate_proj / up_proj outputs
    c.backward(dc.clone())
    sync()
    a, b, d = a0.double(), b0.double(), dc.double()
    s = torch.sigmoid(a)
    f = a * s
    g = s * (1 + a * (1 - s))
    g_scale = s * (1 + (a * (1 - s)).abs())
    u, tiny = U[dtype], TINY[dtype]

    def tol(ref, scale):
        return 2 * u * ref.abs() + 1e-5 * scale + tiny

    ref_c, ref_da, ref_db = f * b, d * b * g, d * f
    problems = [check_elementwise("C", c, ref_c, tol(ref_c, ref_c.abs())),
                check_elementwise("dA", pa.grad, ref_da, tol(ref_da, (d * b).abs() * g_scale)),
                check_elementwise("dB", pb.grad, ref_db, tol(ref_db, ref_db.abs()))]
    return 3, problems


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_case(shape, dtype, gen):
    """shape (batch, q heads, kv heads, seq, head dim); HF's flow: q, k transposed views of
    projection outputs (non-leaf), rotated in place."""
    bsz, hq, hk, s, d = shape
    xq = torch.randn(bsz, s, hq * d, device=DEV, generator=gen).to(dtype).requires_grad_()
    xk = torch.randn(bsz, s, hk * d, device=DEV, generator=gen).to(dtype).requires_grad_()
    inv = 1.0 / (500000.0 ** (torch.arange(0, d, 2, device=DEV, dtype=torch.float64) / d))
    pos = torch.arange(s, device=DEV, dtype=torch.float64)[None] + 7 * torch.arange(bsz, device=DEV)[:, None]
    emb = torch.cat([pos[..., None] * inv] * 2, -1)
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
    dq = torch.randn(bsz, hq, s, d, device=DEV, generator=gen).to(dtype)
    dk = torch.randn(bsz, hk, s, d, device=DEV, generator=gen).to(dtype)
    q = (xq * 1).view(bsz, s, hq, d).transpose(1, 2)
    k = (xk * 1).view(bsz, s, hk, d).transpose(1, 2)
    q64 = q.detach().double().requires_grad_()
    k64 = k.detach().double().requires_grad_()
    oq, ok = liger_rope(q, k, cos, sin)
    torch.autograd.backward([oq, ok], [dq.clone(), dk.clone()])  # the backward rotates them in place
    sync()
    c, sn = cos.double().unsqueeze(1), sin.double().unsqueeze(1)
    rq, rk = q64 * c + _rotate_half(q64) * sn, k64 * c + _rotate_half(k64) * sn
    gq, gk = torch.autograd.grad((rq, rk), (q64, k64), (dq.double(), dk.double()))
    u = ROPE_U[dtype]

    def scale(x64):
        return x64.abs() * c.abs() + _rotate_half(x64).abs() * sn.abs()

    def gscale(dy):
        return dy.double().abs() * c.abs() + _rotate_half((dy.double() * sn).abs()).abs()

    def tol(ref, sc):
        return u * ref.abs() + ROPE_K * sc

    got_dq = xq.grad.view(bsz, s, hq, d).transpose(1, 2)
    got_dk = xk.grad.view(bsz, s, hk, d).transpose(1, 2)
    q0, k0 = q64.detach(), k64.detach()
    problems = [check_elementwise("q_out", oq, rq.detach(), tol(rq.detach(), scale(q0))),
                check_elementwise("k_out", ok, rk.detach(), tol(rk.detach(), scale(k0))),
                check_elementwise("dq", got_dq, gq, tol(gq, gscale(dq))),
                check_elementwise("dk", got_dk, gk, tol(gk, gscale(dk)))]
    return 4, problems


def _targets(n, v, gen):
    t = torch.randint(0, v, (n,), device=DEV, generator=gen)
    t[::7] = IGNORE
    return t


def cross_entropy_case(shape, dtype, gen):
    n, v = shape
    x0 = (2 * torch.randn(n, v, device=DEV, generator=gen)).to(dtype)
    t = _targets(n, v, gen)
    p = x0.clone().requires_grad_()
    loss = liger_cross_entropy(p * 1, t, ignore_index=IGNORE)  # the gradient goes over the copy
    loss.backward()
    sync()
    pr = x0.double().requires_grad_()
    ref = F.cross_entropy(pr, t, ignore_index=IGNORE)
    ref.backward()
    u = U[dtype]
    g = pr.grad
    loss_tol = (2 * u + 1e-5) * ref.detach().abs() + 1e-5
    grad_tol = 4 * u * g.abs() + 3e-5 * g.abs().amax(1, keepdim=True) + TINY[dtype]
    problems = [check_elementwise("loss", loss, ref.detach(), loss_tol),
                check_elementwise("dX", p.grad, g, grad_tol)]
    return 2, problems


def fused_linear_ce_case(shape, dtype, gen):
    bt, h, v = shape
    x0 = torch.randn(bt, h, device=DEV, generator=gen).to(dtype)
    w0 = (torch.randn(v, h, device=DEV, generator=gen) / h ** 0.5 * 2).to(dtype)
    t = _targets(bt, v, gen)
    x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
    loss = liger_fused_linear_cross_entropy(x, w, t, ignore_index=IGNORE)
    loss.backward()
    sync()
    x64, w64 = x0.double().requires_grad_(), w0.double().requires_grad_()
    ref = F.cross_entropy(x64 @ w64.T, t, ignore_index=IGNORE)
    ref.backward()
    bound = FLCE_BOUND[dtype]
    problems = [check_normwise("loss", loss.reshape(1), ref.detach().reshape(1), bound),
                check_normwise("dX", x.grad, x64.grad, bound),
                check_normwise("dW", w.grad, w64.grad, bound)]
    return 3, problems


# ------------------------------------------------------------------------------------------
# the mix a client runs: odd shapes, bf16 and fp32

@dataclass
class Case:
    op: str
    dtype: torch.dtype
    shape: tuple
    fn: Callable

    @property
    def name(self) -> str:
        return f"{self.op} {str(self.dtype).replace('torch.', '')} {'x'.join(map(str, self.shape))}"

    def run(self, gen) -> tuple:
        """(outputs checked, [what was wrong, ...]) on fresh inputs drawn from ``gen``."""
        checked, problems = self.fn(self.shape, self.dtype, gen)
        return checked, [f"{self.name}: {p}" for p in problems if p is not None]


SHAPES = {
    "rms_norm": [(3, 5120), (2, 37, 4095), (257, 2048)],
    "swiglu": [(3, 14336), (2, 37, 8191), (129, 1000)],
    "rope": [(2, 8, 2, 33, 64), (3, 5, 1, 17, 96), (1, 32, 8, 129, 128)],
    "cross_entropy": [(37, 32000), (5, 50257), (130, 4097)],
    "fused_linear_cross_entropy": [(300, 256, 4097), (1000, 512, 32000)],
}
FNS = {"rms_norm": rms_norm_case, "swiglu": swiglu_case, "rope": rope_case, "cross_entropy": cross_entropy_case,
       "fused_linear_cross_entropy": fused_linear_ce_case}


def all_cases() -> List[Case]:
    """Every op x dtype x shape of the mix (a fixed list: the clients' memory settles)."""
    return [Case(op, dt, shape, FNS[op]) for op, shapes in SHAPES.items() for shape in shapes
            for dt in (torch.bfloat16, torch.float32)]


# ------------------------------------------------------------------------------------------
# the victim's flood: forward-only rms_norm launched back to back, so ops are queued in its ring

class Flood:
    """rms_norm forwards of one input, launched without waiting; every ``every`` launches the
    last output is checked against the float64 reference."""

    def __init__(self, gen, rows=8192, n=4096, every=50):
        self.x = torch.randn(rows, n, device=DEV, generator=gen).to(torch.bfloat16)
        self.w = torch.rand(n, device=DEV, generator=gen).to(torch.bfloat16)
        self.every = every
        f = rms_ref.forward(self.x, self.w, EPS, 0.0, rms_ref.LLAMA)
        self.ref, self.tol = f.y, rms_ref.fwd_tol(torch.bfloat16, "llama", f, rms_ref.wmax(self.w, 0.0))
        self.n = 0

    def step(self) -> Optional[str]:
        y = liger_rms_norm(self.x, self.w, EPS)
        self.n += 1
        if self.n % self.every:
            return None
        sync()
        return check_elementwise("flood rms_norm Y", y, self.ref, self.tol)


# ------------------------------------------------------------------------------------------
# the training job of the daemon-kill row

class TinyModel:
    """A residual block and an LM head (rms_norm, SwiGLU MLP, fused linear cross-entropy), bf16,
    trained with plain SGD: the ops of a real step, small enough to start in seconds."""

    def __init__(self, gen, hidden=512, inter=1376, vocab=8191, tokens=515):
        def weight(*shape):
            w = torch.randn(*shape, device=DEV, generator=gen) * shape[-1] ** -0.5
            return w.bfloat16().requires_grad_()

        def norm(n):
            return torch.ones(n, device=DEV, dtype=torch.bfloat16, requires_grad=True)

        self.params = [norm(hidden), weight(inter, hidden), weight(inter, hidden), weight(hidden, inter),
                       norm(hidden), weight(vocab, hidden)]
        self.x = torch.randn(tokens, hidden, device=DEV, generator=gen).bfloat16()
        self.t = torch.randint(0, vocab, (tokens,), device=DEV, generator=gen)

    def state(self) -> list:
        """A copy of the parameters: what a job restores after a step whose results are undefined."""
        return [q.detach().clone() for q in self.params]

    def restore(self, state: list) -> None:
        with torch.no_grad():
            for q, saved in zip(self.params, state):
                q.copy_(saved)
                q.grad = None

    def step(self, lr=1e-2) -> float:
        n1, wg, wu, wd, n2, head = self.params
        h = liger_rms_norm(self.x, n1, 1e-6)
        o = self.x + liger_swiglu(h @ wg.T, h @ wu.T) @ wd.T
        loss = liger_fused_linear_cross_entropy(liger_rms_norm(o, n2, 1e-6), head, self.t)
        loss.backward()
        with torch.no_grad():
            for q in self.params:
                q -= lr * q.grad
                q.grad = None
        return float(loss.detach())  # a sync every step, as a training loop's logging does
