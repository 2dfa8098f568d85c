"""Softmax on the GPU through ligerd's local executor (dispatch mode pinned to local): exact against
a float64 reference.

Run by tests/gpu/run.sh (or: PYTHONPATH=<build>/python python3 -m pytest tests/gpu). Skips without
CUDA. Every output buffer is poisoned with NaN before the kernels run (explicitly where the test
owns the buffer, and through the caching allocator where the op allocates it), so an element a
kernel forgets to write fails the test.

Tolerances (ligerd/testing/reference/softmax.py derives them; u = unit roundoff of the dtype, i.e.
half an ulp relative: fp32 2^-24, bf16 2^-8, fp16 2^-11; TINY = the dtype's subnormal spacing):
- forward, fp32: (1e-5 + 2 u32 |x - max|) |ref| + 4 TINY32. The kernels' fp32 sum of exps has no
  cancellation (every term is positive), so its error is relative to y itself: 1e-5 covers a few
  hundred roundings (the widest row here, 151936, sums ~150 terms per thread before the tree).
  x - max is rounded in fp32 before expf, which exp turns into a relative error of u32 |x - max|
  (0 for 16-bit inputs, whose differences fp32 holds exactly); expf itself is good to 2 ulps.
- forward, bf16/fp16: one rounding of the fp32 result: u |ref| + the fp32 bound + TINY (below the
  smallest normal, rounding is absolute: fp16's 6e-8 matters for small probabilities).
- backward: dX = Y (dY - sum(dY Y)) from the Y the forward wrote; the fp32 dot is good to 1e-5 of
  sum |dY Y| (its scale, which |Y| multiplies), the last two steps to 4 u32 |ref|; then one
  rounding to the dtype as above.
"""

from __future__ import annotations

import math

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

import ligerd  # noqa: E402
from ligerd import _backend  # noqa: E402
from ligerd.transformers import LigerSoftmax, liger_softmax  # noqa: E402

from ligerd.testing.reference import softmax as ref  # noqa: E402
from ligerd.testing.gpu import (DEV, DTYPES, assert_close, liger_peer, nan_like,  # noqa: E402
                                param_id as _id, poison_allocator)

pytestmark = pytest.mark.usefixtures("local_dispatch")  # conftest.py

fwd_tol, dx_tol = ref.fwd_tol, ref.dx_tol

# (rows, n): one element; small odd ones (element accesses, several rows per warp); a 1000-wide
# row; square; (2, 37, 8191) flattened (odd: element accesses, a row in registers at 1024 threads);
# past Liger's 65536 single-block limit (streamed in every dtype); a Qwen vocabulary row
# (151936: streamed, 16-byte accesses).
SHAPES = [(1, 1), (3, 5), (5, 7), (33, 1000), (4096, 4096), (2 * 37, 8191), (2, 70000), (4, 151936)]


def make_inputs(rows, n, dtype, seed, scale=3.0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    x = (scale * torch.randn(rows, n, generator=g, device=DEV)).to(dtype)
    dy = torch.randn(rows, n, generator=g, device=DEV).to(dtype)
    return x, dy


def run_fwd(x):
    y = nan_like(tuple(x.shape), x.dtype)
    _backend.launch("softmax_fwd", [x, y], [])
    return y


def check_fwd_bwd(x, dy, ctx, in_place):
    """Forward into a poisoned Y, then the backward from that Y into a poisoned dX (or over dY)."""
    dtype = x.dtype
    y = run_fwd(x)
    fr = ref.forward(x)
    assert_close("Y", y, fr.y, fwd_tol(dtype, fr), ctx)
    br = ref.backward(dy, y)
    dy_buf = dy.clone()
    dx = dy_buf if in_place else nan_like(tuple(dy.shape), dtype)
    _backend.launch("softmax_bwd", [dy_buf, y, dx], [])
    assert_close("dX", dx, br.dx, dx_tol(dtype, br), ctx)
    if not in_place:
        assert torch.equal(dy_buf, dy), f"{ctx}: dY was modified by an out-of-place backward"
    return y


# ------------------------------------------------------------------------------------------
# 1. The ops, every dtype, outputs poisoned, out of place and in place.

@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("in_place", [False, True], ids=["out", "inplace"])
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_op_exact(dtype, in_place, shape):
    rows, n = shape
    x, dy = make_inputs(rows, n, dtype, seed=rows * 7919 + n)
    y = check_fwd_bwd(x, dy, f"{_id(dtype)} in_place={in_place} {rows}x{n}", in_place)
    # every row sums to 1 up to the rounding of its elements
    s = y.double().sum(-1)
    assert float((s - 1).abs().max()) <= 1e-5 + n * ref.U[dtype] * float(y.double().abs().max())


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("kind", ["spread", "offset", "tied"])
def test_large_magnitudes(dtype, kind):
    """|x| ~ 1e4: 'spread' (most exps underflow: nearly one-hot rows), 'offset' (1e4 + O(1), where
    x - max must be formed before exp: exp(1e4) overflows), 'tied' (several equal maxima)."""
    rows, n = 64, 4096
    g = torch.Generator(device=DEV).manual_seed(17)
    if kind == "spread":
        x = (1e4 * torch.randn(rows, n, generator=g, device=DEV)).clamp(-6e4, 6e4)
    elif kind == "offset":
        x = 1e4 + torch.randn(rows, n, generator=g, device=DEV)
    else:
        x = torch.randint(0, 3, (rows, n), generator=g, device=DEV).float() * 1e4
    x = x.to(dtype)
    dy = torch.randn(rows, n, generator=g, device=DEV).to(dtype)
    y = check_fwd_bwd(x, dy, f"{_id(dtype)} |x|~1e4 {kind}", in_place=False)
    assert torch.isfinite(y.float()).all()
    if kind == "tied":  # exactly 1/k on each of the k maxima, 0 elsewhere
        k = (x == x.amax(-1, keepdim=True)).sum(-1, keepdim=True)
        expect = torch.where(x == x.amax(-1, keepdim=True), 1.0 / k.double(), torch.zeros_like(k, dtype=torch.float64))
        assert_close("Y", y, expect, fwd_tol(dtype, ref.forward(x)), "tied maxima")


@pytest.mark.parametrize("shape", [(64, 1000), (8, 4096), (4, 70000)], ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_neg_inf_entries(dtype, shape):
    """-inf entries (masked logits) give exactly 0; a row of one finite entry gives exactly 1; a
    row of -inf only gives NaN everywhere, as torch.softmax does."""
    rows, n = shape
    x, dy = make_inputs(rows, n, dtype, seed=n + 1)
    g = torch.Generator(device=DEV).manual_seed(5)
    mask = torch.rand(rows, n, generator=g, device=DEV) < 0.3
    mask[0, :] = False
    mask[0, : n // 2] = True  # the first half of a row (whole vectors, whole warps) masked
    mask[1, :] = True
    mask[1, n // 3] = False   # one survivor
    mask[2, :] = True         # nothing left: NaN
    x = x.masked_fill(mask, float("-inf"))
    y = run_fwd(x)
    assert torch.isnan(y[2].float()).all(), "a row of -inf only gives NaN"
    assert torch.isnan(torch.softmax(x[2].float(), -1)).all()  # as torch does
    keep = torch.ones(rows, dtype=torch.bool, device=DEV)
    keep[2] = False
    xs, ys, dys = x[keep], y[keep], dy[keep]
    fr = ref.forward(xs)
    assert_close("Y", ys, fr.y, fwd_tol(dtype, fr), f"{_id(dtype)} -inf entries {shape}")
    assert (ys[mask[keep]] == 0).all(), "-inf gives exactly 0"
    assert float(y[1, n // 3]) == 1.0
    dx = nan_like(tuple(dys.shape), dtype)
    _backend.launch("softmax_bwd", [dys, ys, dx], [])
    br = ref.backward(dys, ys)
    assert_close("dX", dx, br.dx, dx_tol(dtype, br), f"{_id(dtype)} -inf entries {shape}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
def test_nan_and_inf_inputs_poison_their_row_only(dtype):
    x, _ = make_inputs(8, 2048, dtype, seed=9)
    x[3, 100] = float("nan")
    x[5, 7] = float("inf")
    y = run_fwd(x)
    assert torch.isnan(y[3].float()).all() and torch.isnan(y[5].float()).all()
    rows = [0, 1, 2, 4, 6, 7]
    fr = ref.forward(x[rows])
    assert_close("Y", y[rows], fr.y, fwd_tol(dtype, fr), "rows beside the NaN/inf rows")


def test_strided_rows_and_unaligned_starts():
    """Rows at a wider pitch and an unaligned start (element accesses), each tensor its own pitch."""
    rows, n = 96, 2048
    for dtype in DTYPES:
        base = torch.randn(rows, n + 64, device=DEV).to(dtype)
        x = base[:, 5:5 + n]
        ybase = nan_like((rows, n + 32), dtype)
        y = ybase[:, :n]
        _backend.launch("softmax_fwd", [x, y], [])
        fr = ref.forward(x)
        assert_close("Y", y, fr.y, fwd_tol(dtype, fr), f"strided {_id(dtype)}")
        assert torch.isnan(ybase[:, n:].float()).all(), "wrote outside Y's rows"
        dy = torch.randn(rows, n + 16, device=DEV).to(dtype)[:, 3:3 + n]
        dx = nan_like((rows, n), dtype)
        _backend.launch("softmax_bwd", [dy, y, dx], [])
        br = ref.backward(dy, y)
        assert_close("dX", dx, br.dx, dx_tol(dtype, br), f"strided {_id(dtype)}")


def test_bitwise_reproducible():
    x, dy = make_inputs(4096, 4096, torch.bfloat16, seed=11)
    outs = []
    for _ in range(2):
        xr = x.clone().requires_grad_()
        y = liger_softmax(xr)
        y.backward(dy)
        outs.append((y.detach(), xr.grad))
    for a, b in zip(*outs):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------
# 2. Through the Liger-compatible surface: autograd, flattening, non-contiguous input.

MODULE_SHAPES = [(2, 37, 8191), (2, 3, 5, 4096), (4, 1000), (1, 1, 1, 1), (151936,)]


@pytest.mark.parametrize("shape", MODULE_SHAPES, ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_module_autograd(dtype, shape):
    n = shape[-1]
    rows = math.prod(shape[:-1])
    ctx = f"LigerSoftmax {_id(dtype)} {shape}"
    x2, dy2 = make_inputs(rows, n, dtype, seed=rows + n)
    x = x2.view(shape).clone().requires_grad_()
    m = LigerSoftmax()
    poison_allocator(((rows, n), dtype), workspace=False)
    y = m(x)
    assert y.shape == x.shape and y.dtype == dtype
    fr = ref.forward(x2)
    assert_close("Y", y.view(rows, n), fr.y, fwd_tol(dtype, fr), ctx)
    poison_allocator(((rows, n), dtype), workspace=False)
    y.backward(dy2.view(shape))
    br = ref.backward(dy2, y.detach().view(rows, n))
    assert_close("dX", x.grad.view(rows, n), br.dx, dx_tol(dtype, br), ctx)


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
    dy = torch.randn(rows, n, device=DEV).to(dtype)
    ctx = f"non-contiguous ({kind}) {_id(dtype)}"
    leaf = base.detach().clone().requires_grad_()
    xs = leaf.t() if kind == "transposed" else leaf[:, 5:5 + n]
    y = liger_softmax(xs)
    fr = ref.forward(x.contiguous())
    assert_close("Y", y, fr.y, fwd_tol(dtype, fr), ctx)
    y.backward(dy.t().contiguous().t() if kind == "transposed" else dy)  # a strided dY too
    br = ref.backward(dy, y.detach())
    g = leaf.grad.t() if kind == "transposed" else leaf.grad[:, 5:5 + n]
    assert_close("dX", g, br.dx, dx_tol(dtype, br), ctx)
    if kind == "sliced":
        assert torch.count_nonzero(leaf.grad[:, :5]) == 0 and torch.count_nonzero(leaf.grad[:, 5 + n:]) == 0


def test_sum_backward_is_zero():
    """d/dx sum(softmax(x)) = 0: the expanded (stride 0) gradient of .sum() reaches the kernel as
    rows it can read."""
    x = torch.randn(64, 4096, device=DEV, requires_grad=True)
    liger_softmax(x).sum().backward()
    assert float(x.grad.abs().max()) < 1e-6


def test_zero_rows():
    x = torch.empty(0, 64, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    y = liger_softmax(x)
    assert y.shape == (0, 64)
    y.sum().backward()
    assert x.grad.shape == (0, 64)


def test_runs_on_current_stream():
    x = torch.randn(4096, 4096, device=DEV, dtype=torch.bfloat16)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        y = liger_softmax(x)
    s.synchronize()
    fr = ref.forward(x)
    assert_close("Y", y, fr.y, fwd_tol(torch.bfloat16, fr), "side stream")


# ------------------------------------------------------------------------------------------
# 3. torch.compile(fullgraph=True)

def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(1024, 1024)
            self.softmax = LigerSoftmax()

        def forward(self, x):
            return self.softmax(self.lin(x))

    torch.manual_seed(0)
    m = Block().to(DEV, torch.bfloat16)
    x = torch.randn(4, 128, 1024, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(4, 128, 1024, device=DEV, dtype=torch.bfloat16)
    y_e = m(x)
    y_e.backward(dy)
    ge = (x.grad.clone(), m.lin.weight.grad.clone())
    x.grad = None
    m.zero_grad()
    y_c = torch.compile(m, fullgraph=True)(x)
    y_c.backward(dy)
    # Same kernels for the softmax; the compiled graph may fuse the linear's epilogue differently.
    torch.testing.assert_close(y_c, y_e, rtol=2 ** -6, atol=2 ** -10)
    for a, b in zip((x.grad, m.lin.weight.grad), ge):
        torch.testing.assert_close(a, b, rtol=2 ** -5, atol=2 ** -7)


# ------------------------------------------------------------------------------------------
# 4. Bad inputs name the op (Python checks first; the executor checks again underneath).

@pytest.mark.parametrize("case", ["cpu", "5d", "fp64", "int", "hidden0"])
def test_bad_inputs(case):
    x = torch.randn(4, 64, device=DEV, dtype=torch.bfloat16)
    if case == "cpu":
        x = x.cpu()
    elif case == "5d":
        x = x.view(1, 1, 1, 4, 64)
    elif case == "fp64":
        x = x.double()
    elif case == "int":
        x = x.to(torch.int32)
    elif case == "hidden0":
        x = x[:, :0]
    with pytest.raises(ligerd.OpInputError) as ei:
        liger_softmax(x)
    assert "softmax" in str(ei.value), str(ei.value)


def test_executor_second_line_of_checks():
    """Past the Python checks, the executor itself rejects a bad call, naming op and tensor,
    without writing anything."""
    x = torch.randn(4, 64, device=DEV, dtype=torch.bfloat16)
    y = nan_like((4, 63), torch.bfloat16)
    with pytest.raises(ligerd.OpInputError) as ei:
        _backend.launch("softmax_fwd", [x, y], [])
    msg = str(ei.value)
    assert "softmax_fwd" in msg and "'Y'" in msg, msg
    assert torch.isnan(y.float()).all(), "a rejected call wrote its output"
    yh = nan_like((4, 64), torch.float16)
    with pytest.raises(ligerd.OpInputError, match="softmax_fwd.*'Y'"):
        _backend.launch("softmax_fwd", [x, yh], [])
    yy = run_fwd(x)
    dx = yy[:, :]  # dX over Y: only dY may be aliased
    with pytest.raises(ligerd.OpInputError, match="softmax_bwd.*'dX'"):
        _backend.launch("softmax_bwd", [x.clone(), yy, dx], [])
    with pytest.raises(ligerd.OpInputError, match="softmax_bwd"):
        _backend.launch("softmax_bwd", [x, yy], [])


# ------------------------------------------------------------------------------------------
# 5. Liger-Kernel itself when it is installed (same semantics, same tolerances). Its softmax
# refuses rows wider than 65536 ("exceeds the recommended Triton blocksize", 0.8.5), so the
# widest row compared is 65536; ligerd's wider rows (151936, a vocabulary) are checked against
# the float64 reference above.

@pytest.mark.parametrize("shape", [(512, 4096), (4, 65536), (33, 1000)], ids=_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
def test_matches_liger_kernel(dtype, shape):
    Peer = liger_peer("LigerSoftmax")
    rows, n = shape
    x, dy = make_inputs(rows, n, dtype, seed=3)
    outs = []
    for cls in (Peer, LigerSoftmax):
        xr = x.clone().requires_grad_()
        y = cls()(xr)
        y.backward(dy)
        outs.append((y.detach(), xr.grad))
    fr = ref.forward(x)
    u = ref.U[dtype]
    for who, (y, dx) in zip(("liger", "ligerd"), outs):
        br = ref.backward(dy, y)
        ytol, dxtol = fwd_tol(dtype, fr), dx_tol(dtype, br)
        if who == "liger" and dtype != torch.float32:
            # Liger's Triton code forms x - max (and exp, dy * y) in the input dtype: a rounding of
            # |x - max| there moves y by u |x - max| relative; so it is held to a few of the
            # dtype's ulps, ligerd to its own bound.
            ytol = ytol + 4 * u * (1 + fr.d) * fr.y.abs()
            dxtol = dxtol + 4 * u * (br.dx.abs() + br.dx_scale + (dy.double() * y.double()).abs())
        assert_close("Y", y, fr.y, ytol, f"{who} {_id(dtype)} {shape}")
        assert_close("dX", dx, br.dx, dxtol, f"{who} {_id(dtype)} {shape}")
