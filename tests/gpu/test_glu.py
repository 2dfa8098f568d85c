"""SwiGLU and GeGLU on the GPU through ligerd's local executor (dispatch mode pinned to local):
exact against a float64 reference, forward and backward.

Run by tests/gpu/run.sh (or: PYTHONPATH=<build>/python python3 -m pytest tests/gpu). Skips without
CUDA. Output buffers are poisoned with NaN first (the test-owned ones explicitly; op-allocated ones
through the caching allocator), so an element a kernel forgets to write fails the test.

Tolerances: |got - ref| <= 2*u*|ref| + k*scale + tiny, with u the dtype's unit roundoff (fp32
2^-24, bf16 2^-8, fp16 2^-11) and scale the sum of |terms| behind the element (below):
- The inputs are exactly representable in fp32 and float64, so the only error sources are the
  kernel's fp32 arithmetic (expf / tanhf are within 2 ulps of fp32; a handful of fp32 roundings
  after that) and the single final rounding to the output dtype. 2*u*|ref| covers one rounding
  (half an ulp relative, doubled for values near a power of two); k = 1e-5 of the scale covers
  the fp32 arithmetic (~10 roundings of 2^-24 = 6e-7, with 10x margin).
- "scale" matters where the result cancels: act'(a) crosses zero (silu' at a ~ -1.28, gelu' at
  a ~ -0.75), so da's relative error there is unbounded while its absolute error stays at the
  fp32 level of the terms: scale(c) = |act(a)*b|, scale(da) = |dc*b| * (|terms of act'(a)|),
  scale(db) = |dc*act(a)|.
- tiny: fp16 outputs below the smallest normal have an absolute spacing of 2^-24.
"""

from __future__ import annotations

import math

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

import ligerd  # noqa: E402
from ligerd import _backend  # noqa: E402
from ligerd.transformers import (LigerGEGLUMLP, LigerSwiGLUMLP, liger_geglu,  # noqa: E402
                                 liger_swiglu)

from ligerd.testing import gpu as _util  # noqa: E402
from ligerd.testing.gpu import (DEV, DTYPES, TINY, U, liger_peer, nan_like, param_id as _id,  # noqa: E402
                   poison_allocator)

pytestmark = pytest.mark.usefixtures("local_dispatch")  # conftest.py

K_FP32 = 1e-5
SHAPES = [(1, 1), (3, 14336), (4096, 14336), (2, 37, 8191)]
KINDS = ["swiglu", "geglu"]
FNS = {"swiglu": liger_swiglu, "geglu": liger_geglu}
OPS = {"swiglu": ("swiglu_fwd", "swiglu_bwd"), "geglu": ("geglu_fwd", "geglu_bwd")}
K0 = math.sqrt(2.0 / math.pi)


# ------------------------------------------------------------------------------------------
# float64 reference: values and the scale of |terms| behind each.

def reference(kind, a, b, dc=None):
    a, b = a.double(), b.double()
    if kind == "swiglu":
        s = torch.sigmoid(a)
        f = a * s
        g = s * (1 + a * (1 - s))
        g_scale = s * (1 + (a * (1 - s)).abs())
    else:
        inner = K0 * (a + 0.044715 * a ** 3)
        t = torch.tanh(inner)
        f = 0.5 * a * (1 + t)
        dt = (1 - t * t) * K0 * (1 + 3 * 0.044715 * a * a)
        g = 0.5 * (1 + t) + 0.5 * a * dt
        # (1 + t) cancels for large negative a: tanhf's error is relative to |t| ~ 1, so the
        # term's scale is 1, not |1 + t| (and 0.5 |a| for f = 0.5 a (1 + t)).
        g_scale = 0.5 + 0.5 * (a * dt).abs()
    out = {"c": f * b, "c_scale": (0.5 * a.abs() + f.abs()) * b.abs() if kind == "geglu" else (f * b).abs()}
    if dc is not None:
        dc = dc.double()
        out["da"] = dc * b * g
        out["da_scale"] = (dc * b).abs() * g_scale
        out["db"] = dc * f
        out["db_scale"] = (dc.abs() * (0.5 * a.abs() + f.abs())) if kind == "geglu" else (dc * f).abs()
    return out


def assert_close(name, got, ref, scale, dtype, ctx):
    """This module's tolerance (the docstring's) around the float64 reference."""
    _util.assert_close(name, got, ref, 2 * U[dtype] * ref.abs() + K_FP32 * scale + TINY[dtype], ctx)


def make(shape, dtype, seed, halves=False):
    g = torch.Generator(device=DEV).manual_seed(seed)
    if halves:
        x = (3 * torch.randn(*shape[:-1], 2 * shape[-1], device=DEV, generator=g)).to(dtype)
        a, b = x[..., :shape[-1]], x[..., shape[-1]:]
    else:
        a = (3 * torch.randn(shape, device=DEV, generator=g)).to(dtype)
        b = torch.randn(shape, device=DEV, generator=g).to(dtype)
    dc = torch.randn(shape, device=DEV, generator=g).to(dtype)
    return a, b, dc


# ------------------------------------------------------------------------------------------
# 1. The executor ops directly, into NaN-poisoned outputs; in place and out of place.

@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("halves", [False, True], ids=["separate", "halves"])
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("kind", KINDS)
def test_op_exact(kind, dtype, halves, shape):
    ctx = f"{kind} {_id(dtype)} {'halves' if halves else 'separate'} {shape}"
    a, b, dc = make(shape, dtype, seed=sum(shape), halves=halves)
    fwd, bwd = OPS[kind]
    r = reference(kind, a, b, dc)
    c = nan_like(shape, dtype)
    _backend.launch(fwd, [a, b, c], [])
    assert_close("C", c, r["c"], r["c_scale"], dtype, ctx)
    da, db = nan_like(shape, dtype), nan_like(shape, dtype)
    _backend.launch(bwd, [dc, a, b, da, db], [])
    assert_close("dA", da, r["da"], r["da_scale"], dtype, ctx)
    assert_close("dB", db, r["db"], r["db_scale"], dtype, ctx)
    if not halves:
        # In place (Liger): dA over A, dB over B; must equal the out-of-place result bitwise.
        a2, b2 = a.clone(), b.clone()
        _backend.launch(bwd, [dc, a2, b2, a2, b2], [])
        assert torch.equal(a2, da) and torch.equal(b2, db), ctx


# ------------------------------------------------------------------------------------------
# 2. Through the Liger-compatible functions: autograd, flattening, halves, MLP modules.

@pytest.mark.parametrize("shape", [(2, 37, 8191), (3, 14336), (1, 1)], ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("kind", KINDS)
def test_autograd(kind, dtype, shape):
    ctx = f"liger_{kind} {_id(dtype)} {shape}"
    a0, b0, dc = make(shape, dtype, seed=7)
    r = reference(kind, a0, b0, dc)
    pa = a0.clone().requires_grad_()
    pb = b0.clone().requires_grad_()
    a, b = pa * 1, pb * 1  # non-leaf, like gate_proj / up_proj outputs
    poison_allocator((shape, dtype), workspace=False)  # the GLU ops take no workspace
    c = FNS[kind](a, b)
    assert_close("C", c, r["c"], r["c_scale"], dtype, ctx)
    c.backward(dc)
    assert_close("dA", pa.grad, r["da"], r["da_scale"], dtype, ctx)
    assert_close("dB", pb.grad, r["db"], r["db_scale"], dtype, ctx)
    assert torch.equal(a.detach(), pa.grad), "eager backward writes dA into a (Liger semantics)"


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("kind", KINDS)
def test_halves_autograd(kind, dtype):
    rows, f = 37, 8191
    ctx = f"liger_{kind} halves {_id(dtype)}"
    a0, b0, dc = make((rows, f), dtype, seed=11, halves=True)
    x = torch.cat([a0, b0], dim=-1).requires_grad_()
    a, b = x[:, :f], x[:, f:]
    assert not a.is_contiguous()
    r = reference(kind, a0, b0, dc)
    poison_allocator(((rows, f), dtype), workspace=False)
    c = FNS[kind](a, b)
    assert_close("C", c, r["c"], r["c_scale"], dtype, ctx)
    c.backward(dc)
    assert_close("dA", x.grad[:, :f], r["da"], r["da_scale"], dtype, ctx)
    assert_close("dB", x.grad[:, f:], r["db"], r["db_scale"], dtype, ctx)


class TorchMLP(torch.nn.Module):
    def __init__(self, m, kind):
        super().__init__()
        self.m, self.kind = m, kind

    def forward(self, x):
        g = self.m.gate_proj(x)
        act = torch.nn.functional.silu(g) if self.kind == "swiglu" else \
            torch.nn.functional.gelu(g, approximate="tanh")
        return self.m.down_proj(act * self.m.up_proj(x))


class Cfg:
    def __init__(self, act):
        self.hidden_size, self.intermediate_size, self.hidden_act = 1024, 2816, act


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
@pytest.mark.parametrize("kind", KINDS)
def test_mlp_matches_torch(kind, dtype):
    torch.manual_seed(0)
    cls = LigerSwiGLUMLP if kind == "swiglu" else LigerGEGLUMLP
    m = cls(Cfg("silu" if kind == "swiglu" else "gelu_pytorch_tanh")).to(DEV, dtype)
    x = torch.randn(4, 256, 1024, device=DEV, dtype=dtype, requires_grad=True)
    y = m(x)
    y.float().square().mean().backward()
    got = [y.detach()] + [p.grad.clone() for p in m.parameters()] + [x.grad.clone()]
    m.zero_grad()
    x.grad = None
    yr = TorchMLP(m, kind)(x)
    yr.float().square().mean().backward()
    want = [yr.detach()] + [p.grad for p in m.parameters()] + [x.grad]
    # fp32: both compute in fp32 (ours rounds once, torch after each op): GEMM-order noise only.
    # bf16: torch rounds act(a) to bf16 before the multiply; we don't: ~1 bf16 ulp per element,
    # averaged down by the GEMMs that follow.
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=2 ** -6, atol=2 ** -7)
    for name, g, w in zip(["y", "gate", "up", "down", "x"], got, want):
        torch.testing.assert_close(g.float(), w.float(), **tol, msg=lambda s, n=name: f"{kind} {n}: {s}")


# ------------------------------------------------------------------------------------------
# 3. Bad inputs name the op (Python checks first; the executor checks again underneath).

@pytest.mark.parametrize("case", ["cpu", "shape", "mixed_dtypes", "fp64", "5d"])
@pytest.mark.parametrize("kind", KINDS)
def test_bad_inputs(kind, case):
    a = torch.randn(4, 64, device=DEV, dtype=torch.bfloat16)
    b = torch.randn(4, 64, device=DEV, dtype=torch.bfloat16)
    if case == "cpu":
        a, b = a.cpu(), b.cpu()
    elif case == "shape":
        b = b[:, :63]
    elif case == "mixed_dtypes":
        b = b.half()
    elif case == "fp64":
        a, b = a.double(), b.double()
    elif case == "5d":
        a, b = a.view(1, 1, 1, 4, 64), b.view(1, 1, 1, 4, 64)
    with pytest.raises(ligerd.OpInputError) as ei:
        FNS[kind](a, b)
    assert kind in str(ei.value), str(ei.value)


@pytest.mark.parametrize("kind", KINDS)
def test_executor_second_line_of_checks(kind):
    fwd, bwd = OPS[kind]
    a = torch.randn(4, 64, device=DEV, dtype=torch.bfloat16)
    b = torch.randn(4, 64, device=DEV, dtype=torch.bfloat16)
    c = nan_like((4, 63), torch.bfloat16)
    with pytest.raises(ligerd.OpInputError) as ei:
        _backend.launch(fwd, [a, b, c], [])
    assert fwd in str(ei.value) and "'C'" in str(ei.value), str(ei.value)
    assert torch.isnan(c.float()).all(), "a rejected call wrote its output"
    dc = torch.randn(4, 64, device=DEV, dtype=torch.bfloat16)
    with pytest.raises(ligerd.OpInputError) as ei:
        _backend.launch(bwd, [dc, a, b, b, a], [])  # dA over B: only dA over A is allowed
    assert bwd in str(ei.value) and "'dA'" in str(ei.value), str(ei.value)


# ------------------------------------------------------------------------------------------
# 4. Liger-Kernel itself when it is installed (its forward rounds act(a) to the dtype before
# the multiply, so it gets one extra rounding of the scale).

@pytest.mark.parametrize("kind", KINDS)
def test_matches_liger_kernel(kind):
    if kind == "swiglu":
        Peer = liger_peer("LigerSiLUMulFunction", "liger_kernel.ops.swiglu")
    else:
        Peer = liger_peer("LigerGELUMulFunction", "liger_kernel.ops.geglu")
    dtype = torch.bfloat16
    a, b, dc = make((512, 4096), dtype, seed=5)
    r = reference(kind, a, b, dc)
    ours = FNS[kind](a.clone(), b.clone())
    peer = Peer.apply(a.clone(), b.clone())
    assert_close("C ligerd", ours, r["c"], r["c_scale"], dtype, kind)
    # Liger: act(a) rounded to bf16 (u of c's scale) before the multiply.
    assert_close("C liger", peer, r["c"], r["c_scale"] * 2 * U[dtype] / K_FP32, dtype, kind)
