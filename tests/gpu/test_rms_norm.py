"""RMSNorm on the GPU through ligerd's local executor (dispatch mode pinned to local): exact against
a float64 reference.

Run by tests/gpu/run.sh (or: PYTHONPATH=<build>/python python3 -m pytest tests/gpu). Skips without
CUDA. Every output buffer is poisoned with NaN before the kernels run (explicitly where the test
owns the buffer, and through the caching allocator where the op allocates it), so an element a
kernel forgets to write fails the test.

Tolerances (|got - ref| <= k_out*u*|ref| + k_mid*u*scale + 1e-30, u = unit roundoff of the dtype,
i.e. half an ulp relative: fp32 2^-24, bf16 2^-8, fp16 2^-11; "scale" = sum of |terms| behind the
element, see ligerd/testing/reference/rms_norm.py):
- fp32: 1e-5 relative to |ref| and to the scale. The kernels sum in fp32 in a different order
  than float64 (a few hundred roundings of 2^-24 at most for N = 70000, ~1e-6 in practice).
- bf16/fp16 forward: one ulp (k_out = 2) for the final rounding to the input dtype (the kernel and
  the reference round the same value, but the kernel's fp32 rstd differs from the exact one by
  ~1e-7, which can move a value across a rounding boundary), plus, where an intermediate is
  rounded to the input dtype (llama: x*rstd; none: rstd, x*rstd and offset+w), one ulp per such
  rounding of the scale (k_mid = 2 per rounding), since the same 1e-7 can flip each of them.
  So gemma <= 1 ulp, llama <= 2 ulps, none <= 4 ulps.
- bf16/fp16 backward: dX is computed in fp32 and rounded once (1 ulp of |ref|) + fp32 sums
  (1e-5 of the scale); none mode adds one ulp of the scale for its rounded rstd. dW: rounded
  once to W's dtype (1 ulp) + fp32 partial sums over rows (2e-5 of the scale) + llama's rounded
  x*rstd or none's rounded rstd (one ulp of the input dtype of the scale).
"""

from __future__ import annotations

import math

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

import ligerd  # noqa: E402
from ligerd import _backend  # noqa: E402
from ligerd.transformers import LigerRMSNorm, liger_rms_norm  # noqa: E402

from ligerd.testing.reference import rms_norm as ref  # noqa: E402
from ligerd.testing.gpu import (DEV, DTYPES, TINY, U, assert_close, liger_peer, nan_like,  # noqa: E402
                   param_id as _id, poison_allocator)

pytestmark = pytest.mark.usefixtures("local_dispatch")  # conftest.py

MODES = ["llama", "gemma", "none"]
# U (unit roundoff) and TINY (subnormal spacing, where rounding is absolute) per dtype: ligerd/testing/gpu.py.
EPS = 1e-6
# (rows, hidden): one element; Llama-ish; square; a 3-D (2, 37, 8191) flattened (odd hidden);
# past Liger's 64K limit; small odd ones that exercise the scalar (unvectorised) paths.
SHAPES = [(1, 1), (3, 5120), (4096, 4096), (2 * 37, 8191), (2, 70000), (5, 7), (33, 1000)]


# Tolerances: fwd_tol, dx_tol, dw_tol and wmax in ligerd.testing.reference.rms_norm (the
# fused add + RMSNorm tests use them too).
fwd_tol, dx_tol, dw_tol, wmax = ref.fwd_tol, ref.dx_tol, ref.dw_tol, ref.wmax


def make_inputs(rows, n, dtype, wdtype, has_w, offset, seed):
    g = torch.Generator(device=DEV).manual_seed(seed)
    x = torch.randn(rows, n, generator=g, device=DEV, dtype=torch.float32).to(dtype)
    w = None
    if has_w:
        # around 1 for offset 0 (Llama), around 0 for offset 1 (Gemma's 1 + w); signs vary
        center = 1.0 if offset == 0 else 0.0
        w = (center + 0.5 * torch.randn(n, generator=g, device=DEV)).to(wdtype)
    dy = torch.randn(rows, n, generator=g, device=DEV, dtype=torch.float32).to(dtype)
    return x, w, dy


MODE_ID = ref.MODE_IDS  # {"llama": 0, "gemma": 1, "none": 2}


# ------------------------------------------------------------------------------------------
# 1. The ops, every dtype x casting mode x offset x in_place x weight, outputs poisoned.

@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("has_w", [True, False], ids=["w", "now"])
@pytest.mark.parametrize("in_place", [False, True], ids=["out", "inplace"])
@pytest.mark.parametrize("offset", [0.0, 1.0], ids=["off0", "off1"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_op_exact(dtype, mode, offset, in_place, has_w, shape):
    rows, n = shape
    ctx = f"{_id(dtype)} {mode} offset={offset} in_place={in_place} w={has_w} {rows}x{n}"
    x, w, dy = make_inputs(rows, n, dtype, dtype, has_w, offset, seed=rows * 7919 + n)

    # forward into NaN-filled outputs
    y = nan_like((rows, n), dtype)
    rstd = nan_like((rows,), torch.float32)
    _backend.launch("rms_norm_fwd", [x, w, y, rstd], [EPS, offset, MODE_ID[mode]])
    fr = ref.forward(x, w, EPS, offset, MODE_ID[mode])
    assert_close("Y", y, fr.y, fwd_tol(dtype, mode, fr, wmax(w, offset)), ctx)
    rstd_tol = (4 * U[dtype] if mode == "none" and dtype != torch.float32 else 1e-5) * fr.rstd.abs()
    assert_close("RSTD", rstd, fr.rstd, rstd_tol, ctx)

    # backward into NaN-filled dX / dW (or dX over dY), workspace from a poisoned allocator
    br = ref.backward(dy, x, w, EPS, offset, MODE_ID[mode])
    dy_buf = dy.clone()
    dx = dy_buf if in_place else nan_like((rows, n), dtype)
    dw = nan_like((n,), dtype) if has_w else None
    poison_allocator()
    _backend.launch("rms_norm_bwd", [dy_buf, x, w, rstd, dx, dw], [offset, MODE_ID[mode]])
    assert_close("dX", dx, br.dx, dx_tol(dtype, mode, br), ctx)
    if has_w:
        assert_close("dW", dw, br.dw, dw_tol(dtype, dtype, mode, br), ctx)
    if not in_place:
        assert torch.equal(dy_buf, dy), f"{ctx}: dY was modified by an out-of-place backward"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=_id)
def test_fp32_weight_with_half_input(dtype, mode):
    """fp32 master weights with bf16/fp16 activations (Liger allows it; dW comes back fp32)."""
    rows, n = 64, 4096
    x, w, dy = make_inputs(rows, n, dtype, torch.float32, True, 0.0, seed=5)
    m = MODE_ID[mode]
    y = nan_like((rows, n), dtype)
    rstd = nan_like((rows,), torch.float32)
    _backend.launch("rms_norm_fwd", [x, w, y, rstd], [EPS, 0.0, m])
    fr = ref.forward(x, w, EPS, 0.0, m)
    assert_close("Y", y, fr.y, fwd_tol(dtype, mode, fr, wmax(w, 0.0)), f"{_id(dtype)}/fp32 W {mode}")
    dx = nan_like((rows, n), dtype)
    dw = nan_like((n,), torch.float32)
    _backend.launch("rms_norm_bwd", [dy, x, w, rstd, dx, dw], [0.0, m])
    br = ref.backward(dy, x, w, EPS, 0.0, m)
    assert_close("dX", dx, br.dx, dx_tol(dtype, mode, br), f"{_id(dtype)}/fp32 W {mode}")
    assert_close("dW", dw, br.dw, dw_tol(dtype, torch.float32, mode, br), f"{_id(dtype)}/fp32 W {mode}")


def test_bitwise_reproducible():
    x, w, dy = make_inputs(4096, 4096, torch.bfloat16, torch.bfloat16, True, 0.0, seed=11)
    outs = []
    for _ in range(2):
        xr = x.clone().requires_grad_()
        wr = w.clone().requires_grad_()
        y = liger_rms_norm(xr, wr, EPS, in_place=False)
        y.backward(dy)
        outs.append((y.detach(), xr.grad, wr.grad))
    for a, b in zip(*outs):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------
# 2. Through the Liger-compatible surface: autograd, flattening, non-contiguous input.

MODULE_SHAPES = [(2, 37, 8191), (2, 3, 5, 4096), (4, 1000), (1, 1, 1, 1)]


@pytest.mark.parametrize("shape", MODULE_SHAPES, ids=_id)
@pytest.mark.parametrize("in_place", [True, False], ids=["inplace", "out"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_module_autograd(dtype, mode, in_place, shape):
    n = shape[-1]
    offset = 1.0 if mode == "gemma" else 0.0
    ctx = f"LigerRMSNorm {_id(dtype)} {mode} in_place={in_place} {shape}"
    rows = math.prod(shape[:-1])
    x2, w, dy2 = make_inputs(rows, n, dtype, dtype, True, offset, seed=rows + n)
    x = x2.view(shape).clone().requires_grad_()
    dy = dy2.view(shape)
    m = LigerRMSNorm(n, eps=EPS, offset=offset, casting_mode=mode, in_place=in_place).to(DEV, dtype)
    with torch.no_grad():
        m.weight.copy_(w)
    poison_allocator(((rows, n), dtype), ((rows,), torch.float32))
    y = m(x)
    assert y.shape == x.shape and y.dtype == dtype
    fr = ref.forward(x2, w, EPS, offset, MODE_ID[mode])
    assert_close("Y", y.view(rows, n), fr.y, fwd_tol(dtype, mode, fr, wmax(w, offset)), ctx)
    poison_allocator(((rows, n), dtype), ((n,), dtype))
    y.backward(dy.clone())
    br = ref.backward(dy2, x2, w, EPS, offset, MODE_ID[mode])
    assert_close("dX", x.grad.view(rows, n), br.dx, dx_tol(dtype, mode, br), ctx)
    assert_close("dW", m.weight.grad, br.dw, dw_tol(dtype, dtype, mode, br), ctx)


@pytest.mark.parametrize("kind", ["transposed", "sliced"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
def test_non_contiguous_input(dtype, kind):
    n, rows = 2048, 96
    if kind == "transposed":
        base = torch.randn(n, rows, device=DEV).to(dtype)
        x = base.t()  # (rows, n), hidden dim strided: copied to contiguous by the wrapper
    else:
        base = torch.randn(rows, n + 64, device=DEV).to(dtype)
        x = base[:, 5:5 + n]  # rows at a wider pitch, unaligned start: read in place
    assert not x.is_contiguous()
    w = (1 + 0.5 * torch.randn(n, device=DEV)).to(dtype)
    dy = torch.randn(rows, n, device=DEV).to(dtype)
    ctx = f"non-contiguous ({kind}) {_id(dtype)}"
    y = liger_rms_norm(x, w, EPS)
    fr = ref.forward(x.contiguous(), w, EPS, 0.0, 0)
    assert_close("Y", y, fr.y, fwd_tol(dtype, "llama", fr, wmax(w, 0.0)), ctx)
    # the gradient flows back to the strided leaf
    leaf = base.detach().clone().requires_grad_()
    xs = leaf.t() if kind == "transposed" else leaf[:, 5:5 + n]
    liger_rms_norm(xs, w, EPS, in_place=False).backward(dy)
    br = ref.backward(dy, x.contiguous(), w, EPS, 0.0, 0)
    g = leaf.grad.t() if kind == "transposed" else leaf.grad[:, 5:5 + n]
    assert_close("dX", g, br.dx, dx_tol(dtype, "llama", br), ctx)
    if kind == "sliced":
        assert torch.count_nonzero(leaf.grad[:, :5]) == 0 and torch.count_nonzero(leaf.grad[:, 5 + n:]) == 0


def test_no_weight_module():
    m = LigerRMSNorm(4096, elementwise_affine=False).to(DEV, torch.bfloat16)
    assert m.weight is None
    x = torch.randn(8, 4096, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    y = m(x)
    fr = ref.forward(x.detach(), None, 1e-6, 0.0, 0)
    assert_close("Y", y, fr.y, fwd_tol(torch.bfloat16, "llama", fr), "no weight")
    y.sum().backward()
    assert torch.isfinite(x.grad.float()).all()


def test_zero_rows():
    x = torch.empty(0, 64, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    w = torch.ones(64, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    y = liger_rms_norm(x, w, EPS)
    assert y.shape == (0, 64)
    y.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w))


def test_runs_on_current_stream():
    x = torch.randn(4096, 4096, device=DEV, dtype=torch.bfloat16)
    w = torch.ones(4096, device=DEV, dtype=torch.bfloat16)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        y = liger_rms_norm(x, w, EPS)
    s.synchronize()
    fr = ref.forward(x, w, EPS, 0.0, 0)
    assert_close("Y", y, fr.y, fwd_tol(torch.bfloat16, "llama", fr, wmax(w, 0.0)), "side stream")


# ------------------------------------------------------------------------------------------
# 3. torch.compile(fullgraph=True)

def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(1024, 1024)
            self.norm = LigerRMSNorm(1024)

        def forward(self, x):
            return torch.nn.functional.silu(self.norm(self.lin(x)))

    torch.manual_seed(0)
    m = Block().to(DEV, torch.bfloat16)
    x = torch.randn(4, 128, 1024, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    y_e = m(x)
    y_e.float().square().mean().backward()
    ge = (x.grad.clone(), m.norm.weight.grad.clone(), m.lin.weight.grad.clone())
    x.grad = None
    m.zero_grad()
    cm = torch.compile(m, fullgraph=True)
    y_c = cm(x)
    y_c.float().square().mean().backward()
    # Same kernels for the norm; the compiled graph may fuse the surrounding ops differently,
    # so allow a couple of bf16 ulps.
    torch.testing.assert_close(y_c, y_e, rtol=2 ** -6, atol=2 ** -6)
    for a, b in zip((x.grad, m.norm.weight.grad, m.lin.weight.grad), ge):
        torch.testing.assert_close(a, b, rtol=2 ** -5, atol=2 ** -7)


# ------------------------------------------------------------------------------------------
# 4. Bad inputs name the op (Python checks first; the executor checks again underneath).

@pytest.mark.parametrize("case", ["cpu", "wrong_w_size", "mixed_dtypes", "5d", "fp64", "w_on_cpu"])
def test_bad_inputs(case):
    x = torch.randn(4, 64, device=DEV, dtype=torch.bfloat16)
    w = torch.ones(64, device=DEV, dtype=torch.bfloat16)
    if case == "cpu":
        x = x.cpu()
        w = w.cpu()
    elif case == "wrong_w_size":
        w = torch.ones(63, device=DEV, dtype=torch.bfloat16)
    elif case == "mixed_dtypes":
        w = w.half()
    elif case == "5d":
        x = x.view(1, 1, 1, 4, 64)
    elif case == "fp64":
        x = x.double()
        w = w.double()
    elif case == "w_on_cpu":
        w = w.cpu()
    with pytest.raises(ligerd.OpInputError) as ei:
        liger_rms_norm(x, w, EPS)
    assert "rms_norm" in str(ei.value), str(ei.value)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_weight_on_other_device():
    x = torch.randn(4, 64, device="cuda:0")
    w = torch.ones(64, device="cuda:1")
    with pytest.raises(ligerd.OpInputError, match="rms_norm"):
        liger_rms_norm(x, w, EPS)


def test_executor_second_line_of_checks():
    """Past the Python checks, the executor itself rejects a bad call, naming op and tensor,
    without writing anything."""
    x = torch.randn(4, 64, device=DEV, dtype=torch.bfloat16)
    y = nan_like((4, 64), torch.bfloat16)
    rstd_short = torch.empty(3, device=DEV, dtype=torch.float32)
    with pytest.raises(ligerd.OpInputError) as ei:
        _backend.launch("rms_norm_fwd", [x, None, y, rstd_short], [EPS, 0.0, 0])
    msg = str(ei.value)
    assert "rms_norm_fwd" in msg and "RSTD" in msg, msg
    assert torch.isnan(y.float()).all(), "a rejected call wrote its output"
    with pytest.raises(ligerd.OpInputError, match="casting_mode"):
        _backend.launch("rms_norm_fwd", [x, None, y, torch.empty(4, device=DEV)], [EPS, 0.0, 7])
    with pytest.raises(ligerd.LigerdError, match="no_such_op"):
        _backend.launch("no_such_op", [x], [])


# ------------------------------------------------------------------------------------------
# 5. Session, and Liger-Kernel itself when it is installed (same semantics, same tolerances).

def test_session_reports_local():
    x = torch.randn(2, 8, device=DEV)
    liger_rms_norm(x, None, EPS)
    info = ligerd.dispatch_info()
    print("ligerd session:", info)
    assert info["mode"] == "local" and info["requested"] == "local"
    assert info["reason"] == "local (requested by set_dispatch_mode())"


# "none" is left out: there Liger's Triton code sums squares in the input dtype, so its rstd is
# only good to a few bf16 ulps by design; comparing it would test Liger, not ligerd.
@pytest.mark.parametrize("mode", ["llama", "gemma"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
def test_matches_liger_kernel(dtype, mode):
    Peer = liger_peer("LigerRMSNorm")
    n, rows = 4096, 512
    offset = 1.0 if mode == "gemma" else 0.0
    x, w, dy = make_inputs(rows, n, dtype, dtype, True, offset, seed=3)
    outs = []
    for cls in (Peer, LigerRMSNorm):
        m = cls(n, eps=EPS, offset=offset, casting_mode=mode, in_place=False).to(DEV, dtype)
        with torch.no_grad():
            m.weight.copy_(w)
        xr = x.clone().requires_grad_()
        y = m(xr)
        y.backward(dy)
        outs.append((y.detach(), xr.grad, m.weight.grad))
    fr = ref.forward(x, w, EPS, offset, MODE_ID[mode])
    br = ref.backward(dy, x, w, EPS, offset, MODE_ID[mode])
    # Liger's own rounding points differ slightly from ligerd's (see ligerd/testing/reference/rms_norm.py); compare
    # each to the reference with the widest (none-mode) forward tolerance, and to each other.
    for who, (y, dx, dw) in zip(("liger", "ligerd"), outs):
        assert_close("Y", y, fr.y, fwd_tol(dtype, "none", fr, wmax(w, offset)), f"{who} {mode}")
        assert_close("dX", dx, br.dx, dx_tol(dtype, "none", br) * 2, f"{who} {mode}")
        assert_close("dW", dw, br.dw, dw_tol(dtype, dtype, mode, br) * 2, f"{who} {mode}")
