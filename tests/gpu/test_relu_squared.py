"""Squared ReLU on the GPU through ligerd's local executor (dispatch mode pinned to local), exact
against a float64 reference; remote dispatch bitwise local where LIGERD_BIN names a built daemon;
torch.compile; Liger-Kernel as a peer; a tiny Nemotron (whose MLP it is) against transformers.

Run by tests/gpu/run.sh (or: PYTHONPATH=<build>/python python3 -m pytest
tests/gpu/test_relu_squared.py). Skips without CUDA. Every output buffer is poisoned with NaN
before the kernels run (explicitly where the test owns the buffer, and through the caching
allocator where the op allocates it), so an element a kernel forgets to write fails the test.
Inputs are fresh random tensors (seeded per case, different per shape).

Tolerances (ligerd/testing/reference/relu_squared.py derives them): the kernels' fp32 products
x*x and (2x)*dy are exact for bf16/fp16 inputs and one correct rounding for fp32 inputs, and the
output is rounded once, so each element is the float64 value correctly rounded to the dtype:
|got - ref| <= u |ref| + TINY/2 (u = unit roundoff: fp32 2^-24, bf16 2^-8, fp16 2^-11; TINY =
the dtype's subnormal spacing), and bitwise equal to ref.to(dtype). No margin is given because
none is needed: any other rounding (a product formed in the 16-bit dtype, as an eager torch
``relu(x).square()`` in bf16 does not; a fused multiply-add; a flushed subnormal) shows up as a
bit difference.
"""

from __future__ import annotations

import math

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

import ligerd  # noqa: E402
from ligerd import _backend  # noqa: E402
from ligerd.transformers import LigerReLUSquared, liger_relu_squared  # noqa: E402

from ligerd.testing import gpu as _util  # noqa: E402
from ligerd.testing.reference import relu_squared as ref  # noqa: E402
from ligerd.testing.gpu import (DEV, DTYPES, assert_close, liger_peer, nan_like,  # noqa: E402
                                param_id as _id, poison_allocator)

pytestmark = pytest.mark.usefixtures("local_dispatch")  # conftest.py

# Element counts / shapes: one element; fewer than a vector (7); 4097 (512 vectors of 8 16-bit
# elements plus one: the ragged end of a dense row); odd 2-D and 3-D shapes that are dense (one
# ragged row) and the 2 x 37 x 8191 of the other ops' tests; not a multiple of 8 anywhere
# (1000 x 33 is, 33 x 1000 is not); square 4096; Nemotron-4's MLP width plus one.
SHAPES = [(1,), (7,), (4097,), (3, 5), (33, 1000), (1000, 33), (2, 37, 8191), (4096, 4096), (4, 24577)]


def make_inputs(shape, dtype, seed, scale=3.0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    x = (scale * torch.randn(shape, generator=g, device=DEV)).to(dtype)
    dy = torch.randn(shape, generator=g, device=DEV).to(dtype)
    return x, dy


def seed_of(shape, dtype) -> int:
    return (math.prod(shape) * 7919 + len(shape) * 31 + DTYPES.index(dtype)) % (2 ** 31)


def rows(t):
    """The (rows, last dim) view the executor is called with (as the Python wrapper does)."""
    return t.reshape(-1, t.shape[-1])


def check_exact(name, got, ref64, ctx):
    """Within one rounding of the float64 value, and that rounding bit for bit."""
    dtype = got.dtype
    assert_close(name, got, ref64, ref.tol(dtype, ref64), ctx)
    want = ref.exact(dtype, ref64)
    diff = got != want
    if bool(diff.any()):
        i = diff.nonzero()[0].tolist()
        raise AssertionError(f"{ctx}: {name}: {int(diff.sum())} elements are not the correctly rounded "
                             f"value; first at {i}: got {got[tuple(i)].item()!r}, want {want[tuple(i)].item()!r}")


def run_fwd_bwd(x, dy, ctx, in_place=False):
    """relu_squared_fwd into a poisoned Y, relu_squared_bwd into a poisoned dX (or over dY)."""
    dtype = x.dtype
    x2, dy2 = rows(x), rows(dy)
    y = nan_like(tuple(x2.shape), dtype)
    _backend.launch("relu_squared_fwd", [x2, y], [])
    check_exact("Y", y, ref.forward(x2), ctx)
    dy_buf = dy2.clone()
    dx = dy_buf if in_place else nan_like(tuple(dy2.shape), dtype)
    _backend.launch("relu_squared_bwd", [dy_buf, x2, dx], [])
    check_exact("dX", dx, ref.backward(dy2, x2), ctx)
    if not in_place:
        assert torch.equal(dy_buf, dy2), f"{ctx}: dY was modified by an out-of-place backward"
    return y, dx


# ------------------------------------------------------------------------------------------
# 1. The ops, every dtype, outputs poisoned, out of place and in place.

@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("in_place", [False, True], ids=["out", "inplace"])
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_op_exact(dtype, in_place, shape):
    x, dy = make_inputs(shape, dtype, seed_of(shape, dtype))
    run_fwd_bwd(x, dy, f"{_id(dtype)} in_place={in_place} {_id(shape)}", in_place)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
def test_large_magnitudes(dtype):
    """|x| ~ 1e4 (y ~ 1e8, dX ~ 1e4 |dY|), and |dY| ~ 1e4 too: still one rounding (bf16 and fp32
    hold those squares without overflow)."""
    shape = (64, 4099)
    x, dy = make_inputs(shape, dtype, seed=17, scale=1e4)
    dy = (1e4 * dy.float()).to(dtype)
    y, _ = run_fwd_bwd(x, dy, f"{_id(dtype)} |x|~1e4")
    assert torch.isfinite(y.float()).all()
    assert float(y.float().max()) > 1e8


def test_fp16_overflow_is_inf_as_torch():
    """fp16's largest finite value is 65504: relu(x)^2 for x > 255.9 rounds to inf, as transformers'
    relu-then-square in fp16 does; everything below stays exact."""
    x = torch.tensor([[255.0, 256.0, 300.0, -300.0, 1e4, 100.0, 0.5, -0.0]], device=DEV, dtype=torch.float16)
    y = nan_like(tuple(x.shape), torch.float16)
    _backend.launch("relu_squared_fwd", [x, y], [])
    want = torch.square(torch.relu(x))
    assert torch.equal(y, want), (y, want)
    assert torch.isinf(y[0, 1:3]).all() and torch.isinf(y[0, 4])


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_special_values(dtype):
    """0, -0 and negatives give 0 and a 0 gradient (even where dY is inf or NaN, as torch's relu
    backward); NaN stays NaN; +inf squares to inf with gradient inf * dY."""
    vals = [0.0, -0.0, -3.0, 2.0, float("nan"), float("inf"), float("-inf"), -1.0, 1.5]
    grads = [1.0, 1.0, float("inf"), 0.5, 1.0, 1.0, 1.0, float("nan"), -2.0]
    x = torch.tensor([vals], device=DEV, dtype=dtype)
    dy = torch.tensor([grads], device=DEV, dtype=dtype)
    y = nan_like(tuple(x.shape), dtype)
    dx = nan_like(tuple(x.shape), dtype)
    _backend.launch("relu_squared_fwd", [x, y], [])
    _backend.launch("relu_squared_bwd", [dy, x, dx], [])
    xt = x.detach().float().requires_grad_()
    yt = torch.square(torch.relu(xt))
    yt.backward(dy.float())
    assert torch.equal(y.float().isnan(), yt.isnan()) and torch.equal(y.float().nan_to_num(), yt.nan_to_num())
    assert torch.equal(dx.float().isnan(), xt.grad.isnan())
    assert torch.equal(dx.float().nan_to_num(), xt.grad.nan_to_num())
    assert dx[0, 2] == 0 and dx[0, 7] == 0


def test_strided_rows_and_unaligned_starts():
    """Rows at a wider pitch and an unaligned start (element accesses), each tensor its own pitch;
    nothing written outside the outputs' rows."""
    nrows, n = 96, 2048
    for dtype in DTYPES:
        base = torch.randn(nrows, n + 64, device=DEV).to(dtype)
        x = base[:, 5:5 + n]
        ybase = nan_like((nrows, n + 32), dtype)
        y = ybase[:, :n]
        _backend.launch("relu_squared_fwd", [x, y], [])
        check_exact("Y", y, ref.forward(x), f"strided {_id(dtype)}")
        assert torch.isnan(ybase[:, n:].float()).all(), "wrote outside Y's rows"
        dy = torch.randn(nrows, n + 16, device=DEV).to(dtype)[:, 3:3 + n]
        dxbase = nan_like((nrows, n + 8), dtype)
        dx = dxbase[:, :n]
        _backend.launch("relu_squared_bwd", [dy, x, dx], [])
        check_exact("dX", dx, ref.backward(dy, x), f"strided {_id(dtype)}")
        assert torch.isnan(dxbase[:, n:].float()).all(), "wrote outside dX's rows"
        # Aligned rows at a wider pitch: 16-byte accesses, still only the rows written.
        xa = base[:, :n]
        _backend.launch("relu_squared_fwd", [xa, y], [])
        check_exact("Y", y, ref.forward(xa), f"strided aligned {_id(dtype)}")
        assert torch.isnan(ybase[:, n:].float()).all(), "wrote outside Y's rows"


def test_dense_tail_written_and_nothing_past_it():
    """A dense odd-length tensor inside a poisoned buffer: every element written, none after it."""
    for dtype in DTYPES:
        for n in (1, 7, 9, 4097, 65537):
            x, dy = make_inputs((n,), dtype, seed=n)
            buf = nan_like((n + 16,), dtype)
            _backend.launch("relu_squared_fwd", [x.view(1, n), buf[:n].view(1, n)], [])
            check_exact("Y", buf[:n], ref.forward(x), f"dense tail {_id(dtype)} n={n}")
            assert torch.isnan(buf[n:].float()).all(), f"{_id(dtype)} n={n}: wrote past Y"


def test_bitwise_reproducible():
    x, dy = make_inputs((4096, 4096), torch.bfloat16, seed=11)
    outs = []
    for _ in range(2):
        xr = x.clone().requires_grad_()
        y = liger_relu_squared(xr)
        y.backward(dy)
        outs.append((y.detach(), xr.grad))
    for a, b in zip(*outs):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------
# 2. Through the Liger-compatible surface: autograd, flattening, non-contiguous input.

MODULE_SHAPES = [(2, 37, 8191), (2, 3, 5, 4096), (4, 1000), (1, 1, 1, 1), (24577,), (2, 2, 3, 5, 7)]


@pytest.mark.parametrize("shape", MODULE_SHAPES, ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_module_autograd(dtype, shape):
    ctx = f"LigerReLUSquared {_id(dtype)} {_id(shape)}"
    x0, dy = make_inputs(shape, dtype, seed=seed_of(shape, dtype) + 1)
    x = x0.clone().requires_grad_()
    m = LigerReLUSquared()
    poison_allocator((shape, dtype), workspace=False)
    y = m(x)
    assert y.shape == x.shape and y.dtype == dtype
    check_exact("Y", y.detach(), ref.forward(x0), ctx)
    poison_allocator((shape, dtype), workspace=False)
    y.backward(dy)
    check_exact("dX", x.grad, ref.backward(dy, x0), ctx)
    assert torch.equal(x.detach(), x0), "the input was modified"


@pytest.mark.parametrize("kind", ["transposed", "sliced"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
def test_non_contiguous_input(dtype, kind):
    n, nrows = 2048, 96
    if kind == "transposed":
        base = torch.randn(n, nrows, device=DEV).to(dtype)
    else:
        base = torch.randn(nrows, n + 64, device=DEV).to(dtype)
    leaf = base.detach().clone().requires_grad_()
    xs = leaf.t() if kind == "transposed" else leaf[:, 5:5 + n]
    assert not xs.is_contiguous()
    dy = torch.randn(nrows, n, device=DEV).to(dtype)
    ctx = f"non-contiguous ({kind}) {_id(dtype)}"
    y = liger_relu_squared(xs)
    check_exact("Y", y.detach(), ref.forward(xs.detach()), ctx)
    y.backward(dy.t().contiguous().t() if kind == "transposed" else dy)  # a strided dY too
    g = leaf.grad.t() if kind == "transposed" else leaf.grad[:, 5:5 + n]
    check_exact("dX", g, ref.backward(dy, xs.detach()), ctx)
    if kind == "sliced":
        assert torch.count_nonzero(leaf.grad[:, :5]) == 0 and torch.count_nonzero(leaf.grad[:, 5 + n:]) == 0


def test_sum_backward_is_two_relu():
    """d/dx sum(relu(x)^2) = 2 relu(x): the expanded (stride 0) gradient of .sum() reaches the
    kernel as rows it can read."""
    x = torch.randn(64, 4096, device=DEV, requires_grad=True)
    liger_relu_squared(x).sum().backward()
    assert torch.equal(x.grad, 2 * torch.relu(x.detach()))


def test_zero_size_and_scalar():
    x = torch.empty(0, 64, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    y = liger_relu_squared(x)
    assert y.shape == (0, 64)
    y.sum().backward()
    assert x.grad.shape == (0, 64)
    s = torch.tensor(-2.0, device=DEV, requires_grad=True)
    ys = liger_relu_squared(s)
    assert ys.shape == () and float(ys.detach()) == 0.0


def test_runs_on_current_stream():
    x = torch.randn(4096, 4096, device=DEV, dtype=torch.bfloat16)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        y = liger_relu_squared(x)
    s.synchronize()
    check_exact("Y", y, ref.forward(x), "side stream")


# ------------------------------------------------------------------------------------------
# 3. torch.compile(fullgraph=True): Nemotron's MLP, down(relu2(up(x)))

def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = torch.nn.Linear(1024, 3072, bias=False)
            self.down = torch.nn.Linear(3072, 1024, bias=False)
            self.act = LigerReLUSquared()

        def forward(self, x):
            return self.down(self.act(self.up(x)))

    torch.manual_seed(0)
    m = MLP().to(DEV, torch.bfloat16)
    x = torch.randn(4, 128, 1024, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(4, 128, 1024, device=DEV, dtype=torch.bfloat16)
    y_e = m(x)
    y_e.backward(dy)
    ge = (x.grad.clone(), m.up.weight.grad.clone())
    x.grad = None
    m.zero_grad()
    y_c = torch.compile(m, fullgraph=True)(x)
    y_c.backward(dy)
    # The same kernels for the activation; the compiled graph may order the GEMMs' epilogues
    # differently, so bf16 rounding differences of the projections are allowed.
    torch.testing.assert_close(y_c, y_e, rtol=2 ** -6, atol=2 ** -6)
    for a, b in zip((x.grad, m.up.weight.grad), ge):
        torch.testing.assert_close(a, b, rtol=2 ** -5, atol=2 ** -5)


def test_compiled_activation_alone_is_bitwise_eager():
    """The op alone under torch.compile: the same kernels, so the same bits."""
    torch._dynamo.reset()
    x0, dy = make_inputs((513, 4097), torch.bfloat16, seed=5)
    outs = []
    for fn in (liger_relu_squared, torch.compile(liger_relu_squared, fullgraph=True)):
        x = x0.clone().requires_grad_()
        y = fn(x)
        y.backward(dy)
        outs.append((y.detach(), x.grad))
    for a, b in zip(*outs):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------
# 4. Bad inputs name the op (Python checks first; the executor checks again underneath).

@pytest.mark.parametrize("case", ["cpu", "fp64", "int"])
def test_bad_inputs(case):
    x = torch.randn(4, 64, device=DEV, dtype=torch.bfloat16)
    x = {"cpu": x.cpu(), "fp64": x.double(), "int": x.to(torch.int32)}[case]
    with pytest.raises(ligerd.OpInputError) as ei:
        liger_relu_squared(x)
    assert "relu_squared" in str(ei.value), str(ei.value)


def test_executor_second_line_of_checks():
    """Past the Python checks, the executor itself rejects a bad call, naming op and tensor,
    without writing anything."""
    x = torch.randn(4, 64, device=DEV, dtype=torch.bfloat16)
    y = nan_like((4, 63), torch.bfloat16)
    with pytest.raises(ligerd.OpInputError) as ei:
        _backend.launch("relu_squared_fwd", [x, y], [])
    msg = str(ei.value)
    assert "relu_squared_fwd" in msg and "'Y'" in msg, msg
    assert torch.isnan(y.float()).all(), "a rejected call wrote its output"
    yh = nan_like((4, 64), torch.float16)
    with pytest.raises(ligerd.OpInputError, match="relu_squared_fwd.*'Y'"):
        _backend.launch("relu_squared_fwd", [x, yh], [])
    dy = torch.randn(4, 64, device=DEV, dtype=torch.bfloat16)
    xx = x.clone()
    with pytest.raises(ligerd.OpInputError, match="relu_squared_bwd.*'dX'"):  # only dY may be aliased
        _backend.launch("relu_squared_bwd", [dy, xx, xx], [])
    with pytest.raises(ligerd.OpInputError, match="relu_squared_bwd"):
        _backend.launch("relu_squared_bwd", [dy, x], [])


# ------------------------------------------------------------------------------------------
# 5. Liger-Kernel itself when it is installed: the same values. Liger computes relu(x)*relu(x)
# and dy*2*relu(x) in Triton on the input dtype; held to one rounding of its own dtype plus one
# (its 16-bit product may be rounded twice), ligerd to the exact rounding above.

@pytest.mark.parametrize("shape", [(512, 4096), (33, 1000), (4, 24577)], ids=_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
def test_matches_liger_kernel(dtype, shape):
    Peer = liger_peer("LigerReLUSquared")
    x, dy = make_inputs(shape, dtype, seed=3)
    fr, br = ref.forward(x), ref.backward(dy, x)
    for who, cls in (("liger", Peer), ("ligerd", LigerReLUSquared)):
        xr = x.clone().requires_grad_()
        y = cls()(xr)
        y.backward(dy)
        ctx = f"{who} {_id(dtype)} {_id(shape)}"
        if who == "ligerd":
            check_exact("Y", y.detach(), fr, ctx)
            check_exact("dX", xr.grad, br, ctx)
        else:
            u = ref.U[dtype]
            assert_close("Y", y, fr, 2 * ref.tol(dtype, fr) + u * fr.abs(), ctx)
            assert_close("dX", xr.grad, br, 2 * ref.tol(dtype, br) + u * br.abs(), ctx)


# ------------------------------------------------------------------------------------------
# 6. Remote dispatch: the same calls through the daemon, bitwise local


@pytest.fixture(scope="module")
def daemon():
    with _util.daemon_for_local_module("ligerd-relu2-") as d:
        yield d


def _fwd_bwd(x, dy):
    xr = x.clone().requires_grad_()
    y = liger_relu_squared(xr)
    y.backward(dy)
    torch.cuda.synchronize()
    return y.detach().clone(), xr.grad


@pytest.mark.parametrize("shape", [(4097,), (2, 37, 8191), (4096, 4096)], ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_remote_equals_local_bitwise(daemon, dtype, shape):
    x, dy = make_inputs(shape, dtype, seed=seed_of(shape, dtype) + 2)
    ligerd.set_dispatch_mode("local")
    local = _fwd_bwd(x, dy)
    ligerd.set_dispatch_mode("remote")
    try:
        remote = _fwd_bwd(x, dy)
        info = ligerd.dispatch_info()
        dev = info["devices"].get(torch.cuda.current_device())
        assert dev is not None and dev["mode"] == "remote", f"ops did not run remotely: {info}"
    finally:
        ligerd.set_dispatch_mode("local")
    for name, a, c in zip(("Y", "dX"), remote, local):
        assert torch.equal(a, c), f"{_id(dtype)} {_id(shape)}: {name} differs between remote and local dispatch"
    check_exact("dX", remote[1], ref.backward(dy, x), f"remote {_id(dtype)} {_id(shape)}")


# ------------------------------------------------------------------------------------------
# 7. A tiny Nemotron patched with apply_liger_kernel_to_nemotron(relu_squared=True) only,
# against transformers on the same weights.

def test_tiny_nemotron_matches_transformers():
    """fp32, real kernels: the loss to 1e-5 relative and every gradient to 1e-4 norm-wise (the
    activation is correctly rounded, as transformers' fp32 relu-then-square is; what differs is
    only whether the fp32 products round identically, i.e. nothing, plus GEMM order)."""
    pytest.importorskip("transformers")
    import ligerd.transformers as lt
    from ligerd.testing import tiny_models as tm

    def mlps_are_ligerds(model):
        mlps = [m for m in model.modules() if type(m).__name__.endswith("NemotronMLP")]
        assert mlps and all(type(m).__module__.startswith("ligerd.") for m in mlps)

    tm.assert_patch_matches(
        "nemotron", lambda: lt.apply_liger_kernel_to_nemotron(relu_squared=True, fused_linear_cross_entropy=False),
        grad_tol=1e-4, device=DEV, check=mlps_are_ligerds)
