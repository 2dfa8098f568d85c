"""The clamped-GLU custom ops' plumbing on the CPU: autograd against transformers' own formulas
(GptOssExperts._apply_gate, DeepseekV4Experts._apply_gate, written out below as they are there),
both layouts, odd and 1-D to 4-D shapes, strided inputs read in place, the clamp boundaries
(exactly +-limit, where autograd's gradient is 0), NaN / inf / huge magnitudes, empty inputs and
the friendly input errors.

The executor is replaced by a float64 reference "launcher" that honours the same tensor/scalar
contract as kernels/ops/clamped_glu.cc, so everything except the CUDA kernels themselves is
exercised here (the kernels are tested on the GPU in tests/gpu/test_clamped_glu.py)."""

import math

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

from ligerd._errors import OpInputError  # noqa: E402
from ligerd.ops.clamped_glu import clamped_glu, clamped_swiglu, gpt_oss_glu  # noqa: E402
from ligerd.testing.reference import clamped_glu as ref  # noqa: E402


def hf_gpt_oss(gate_up, alpha, limit):
    """transformers' GptOssExperts._apply_gate (5.17 and 5.25)."""
    gate, up = gate_up[..., ::2], gate_up[..., 1::2]
    gate = gate.clamp(min=None, max=limit)
    up = up.clamp(min=-limit, max=limit)
    glu = gate * torch.sigmoid(gate * alpha)
    return (up + 1) * glu


def hf_dsv4(gate_up, limit):
    """transformers' DeepseekV4Experts._apply_gate with act_fn = SiLU."""
    gate, up = gate_up.chunk(2, dim=-1)
    gate = gate.clamp(max=limit)
    up = up.clamp(min=-limit, max=limit)
    return torch.nn.functional.silu(gate) * up


CASES = {  # name: (ligerd call, transformers' formula)
    "gpt_oss": (lambda x, lim: gpt_oss_glu(x, 1.702, lim), lambda x, lim: hf_gpt_oss(x, 1.702, lim)),
    "deepseek_v4": (lambda x, lim: clamped_swiglu(x, lim), lambda x, lim: hf_dsv4(x, lim)),
}


def _run(fn, x, dy):
    x = x.detach().clone().requires_grad_()
    y = fn(x)
    y.backward(dy)
    return y.detach(), x.grad


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("shape", [(2,), (1, 2), (3, 38), (2, 5, 66), (2, 3, 4, 18), (4097, 2),
                                   (7, 4098)])
def test_matches_transformers_fp32(launcher, case, shape):
    """fp32 against transformers' formula in float64 (what the reference executor rounds once):
    forward and the gradient of x, to 1 ulp of fp32."""
    ours, theirs = CASES[case]
    torch.manual_seed(sum(shape))
    x = 6 * torch.randn(shape)  # spread past limit 7 / 3: many clamped positions
    lim = 7.0 if case == "gpt_oss" else 3.0
    dy = torch.randn(shape[:-1] + (shape[-1] // 2,))
    y, dx = _run(lambda t: ours(t, lim), x, dy)
    y64, dx64 = _run(lambda t: theirs(t, lim), x.double(), dy.double())
    assert y.shape == y64.shape and y.dtype == torch.float32 and dx.shape == x.shape
    torch.testing.assert_close(y, y64.float(), rtol=2 ** -23, atol=1e-30)
    torch.testing.assert_close(dx, dx64.float(), rtol=2 ** -23, atol=1e-30)
    assert [c[0] for c in launcher.calls] == ["clamped_glu_fwd", "clamped_glu_bwd"]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_rounds_once_and_beats_transformers(launcher, case, dtype):
    """bf16/fp16: the result is transformers' float64 value rounded once (the reference executor
    computes in float64), and never further from it than transformers' own 16-bit forward, which
    rounds every intermediate (its error per element may exceed ours by the rounding of each of
    its steps; ours is at most half an ulp)."""
    ours, theirs = CASES[case]
    torch.manual_seed(3)
    x = (5 * torch.randn(6, 130)).to(dtype)
    lim = 7.0 if case == "gpt_oss" else 3.0
    dy = torch.randn(6, 65).to(dtype)
    y, dx = _run(lambda t: ours(t, lim), x, dy)
    y64, dx64 = _run(lambda t: theirs(t, lim), x.double(), dy.double())
    yh, dxh = _run(lambda t: theirs(t, lim), x, dy)
    assert torch.equal(y, y64.to(dtype)) and torch.equal(dx, dx64.to(dtype))
    assert (y.double() - y64).abs().max() <= (yh.double() - y64).abs().max()
    assert (dx.double() - dx64).abs().max() <= (dxh.double() - dx64).abs().max()


@pytest.mark.parametrize("case", list(CASES))
def test_clamp_boundaries_and_edge_values(launcher, case):
    """Gate and up exactly at +-limit (autograd passes no gradient there: clamp's backward is
    strict), just inside and outside, 0, huge finite magnitudes, +-inf and NaN: forward and
    gradient as autograd's on transformers' formula, NaN where it gives NaN."""
    ours, theirs = CASES[case]
    lim = 7.0
    f32 = torch.float32
    inside = torch.nextafter(torch.tensor(lim, dtype=f32), torch.tensor(0.0, dtype=f32)).item()
    outside = torch.nextafter(torch.tensor(lim, dtype=f32), torch.tensor(1e9, dtype=f32)).item()
    vals = [lim, -lim, inside, -inside, outside, -outside, 0.0, -0.0, 1.0, -1.0, 3e38, -3e38, 1e4,
            -1e4, float("inf"), float("-inf"), float("nan")]
    # Every gate value against every up value, in the op's layout (all exact in fp32).
    g = torch.tensor(vals, dtype=f32).repeat_interleave(len(vals)).double()
    u = torch.tensor(vals, dtype=f32).repeat(len(vals)).double()
    if case == "gpt_oss":
        x64 = torch.stack((g, u), -1).reshape(1, -1)
    else:
        x64 = torch.cat((g, u)).reshape(1, -1)
    x = x64.float()
    dy = torch.linspace(-2, 2, g.numel()).reshape(1, -1)
    y, dx = _run(lambda t: ours(t, lim), x, dy)
    y64, dx64 = _run(lambda t: theirs(t, lim), x64, dy.double())
    torch.testing.assert_close(y, y64.float(), rtol=2 ** -23, atol=0, equal_nan=True)
    torch.testing.assert_close(dx, dx64.float(), rtol=2 ** -23, atol=0, equal_nan=True)
    # The boundary itself: gate == limit and up == +-limit get exactly 0.
    gate_grad, up_grad = ref.split(dx, case == "gpt_oss")
    at_g = (g == lim).reshape(1, -1)
    at_u = (u.abs() == lim).reshape(1, -1)
    assert torch.all(gate_grad[at_g] == 0) and torch.all(up_grad[at_u] == 0)
    # Just inside both bounds the gradient flows (non-zero where dy and the other factor are).
    assert torch.any(up_grad[(u.abs() == inside).reshape(1, -1)] != 0)


def test_dy_inf_nan_where_clamped_gives_zero(launcher):
    """A clamped position's gradient is 0 even for an inf / NaN dY (autograd's where, not a
    product)."""
    x = torch.tensor([[9.0, 9.0, 2.0, 2.0]])  # pairs: (gate 9 clamped, up 9 clamped), (2, 2)
    dy = torch.tensor([[float("inf"), 1.0]])
    _, dx = _run(lambda t: gpt_oss_glu(t, 1.702, 7.0), x, dy)
    _, dx64 = _run(lambda t: hf_gpt_oss(t, 1.702, 7.0), x.double(), dy.double())
    assert dx[0, 0] == 0 and dx[0, 1] == 0
    torch.testing.assert_close(dx, dx64.float(), rtol=2 ** -23, atol=0)


def test_general_scalars_and_no_clamp(launcher):
    """Any alpha / up_offset, and limit = inf (no clamp): silu-like GLU g sigmoid(alpha g) (u+c)."""
    torch.manual_seed(5)
    x = 4 * torch.randn(3, 5, 22)
    dy = torch.randn(3, 5, 11)
    for pairs in (False, True):
        for alpha, off in ((0.5, -2.0), (2.5, 0.25)):
            def theirs(t):
                gate, up = (t[..., ::2], t[..., 1::2]) if pairs else t.chunk(2, -1)
                return gate * torch.sigmoid(alpha * gate) * (up + off)
            y, dx = _run(lambda t: clamped_glu(t, alpha, math.inf, off, pairs), x, dy)
            y64, dx64 = _run(theirs, x.double(), dy.double())
            torch.testing.assert_close(y, y64.float(), rtol=2 ** -23, atol=1e-30)
            torch.testing.assert_close(dx, dx64.float(), rtol=2 ** -23, atol=1e-30)
            assert launcher.calls[-1][2] == [alpha, math.inf, off, 1.0 if pairs else 0.0]


def test_contract_positions_and_strided_input(launcher):
    """clamped_glu_fwd gets [X, Y] and clamped_glu_bwd [dY, X, dX] as (rows, n) views and the
    scalars [alpha, limit, up_offset, pairs]; a column slice of a wider buffer (rows at its
    pitch) is read in place, not copied; dX is a fresh contiguous buffer."""
    wide = torch.randn(4, 3, 40)  # a leaf; x is its column slice
    x = wide[..., :26].requires_grad_()
    y = clamped_swiglu(x, 5.0)
    y.backward(torch.randn(4, 3, 13))
    (op, ts, sc), (op2, ts2, sc2) = launcher.calls
    assert op == "clamped_glu_fwd" and sc == [1.0, 5.0, 0.0, 0.0]
    assert ts[0] == ((12, 26), x.data_ptr(), (40, 1)), "the slice is read at its pitch"
    assert ts[1][0] == (12, 13)
    assert op2 == "clamped_glu_bwd" and sc2 == sc
    assert [t[0] for t in ts2] == [(12, 13), (12, 26), (12, 26)]
    assert ts2[1][1] == x.data_ptr(), "the backward reads the forward's input"
    assert ts2[2][2] == (26, 1)
    assert x.grad.shape == x.shape


def test_empty_inputs(launcher):
    for shape in [(0, 8), (3, 0), (2, 0, 6)]:
        x = torch.randn(shape, requires_grad=True)
        y = clamped_swiglu(x, 7.0)
        assert y.shape == shape[:-1] + (shape[-1] // 2,)
        y.sum().backward()
        assert x.grad.shape == x.shape
    assert launcher.calls == []


@pytest.mark.parametrize("bad,match", [
    (lambda: clamped_glu([1.0, 2.0]), r"ligerd op clamped_glu: x must be a torch.Tensor, got list"),
    (lambda: clamped_glu(torch.randn(3, 5)), r"ligerd op clamped_glu: x's last dim is 5 .*expected an even 2I"),
    (lambda: clamped_glu(torch.ones(3, 4, dtype=torch.int32)), r"ligerd op clamped_glu: x has dtype torch.int32"),
    (lambda: clamped_glu(torch.randn(3, 4, dtype=torch.float64)), r"ligerd op clamped_glu: x has dtype torch.float64"),
    (lambda: clamped_glu(torch.randn(1, 1, 1, 1, 4)), r"ligerd op clamped_glu: x must have 1 to 4 dimensions"),
    (lambda: clamped_glu(torch.randn(3, 4), limit=-1.0), r"ligerd op clamped_glu: limit must be a float >= 0"),
    (lambda: clamped_glu(torch.randn(3, 4), limit=float("nan")), r"ligerd op clamped_glu: limit must be"),
    (lambda: clamped_glu(torch.randn(3, 4), alpha=float("inf")), r"ligerd op clamped_glu: alpha must be a finite float"),
    (lambda: gpt_oss_glu(torch.randn(3, 4), 1.702, None), r"ligerd op clamped_glu: limit must be a float >= 0 \(inf: no clamp\), got None"),
])
def test_bad_input_is_a_clear_error(launcher, bad, match):
    with pytest.raises(OpInputError, match=match):
        bad()
    assert launcher.calls == []


def _fp32_emulation(x, dy, alpha, limit, off, pairs, out_dtype):
    """The kernels' arithmetic (clamped_glu.cuh) in fp32 torch ops: z = alpha g rounded,
    s = 1 / (1 + e^-z), the products in the kernels' order, the fma as one rounding of the
    float64 value; each output rounded once to out_dtype."""
    f = torch.float32
    xg, xu = (t.float() for t in ref.split(x, pairs))
    lim, a, o = (torch.tensor(v, dtype=f) for v in (limit, alpha, off))
    g = torch.where(xg > lim, lim, xg)
    u = torch.where(xu > lim, lim, torch.where(xu < -lim, -lim, xu))
    s = torch.reciprocal(1 + torch.exp(-(a * g)))
    y = (g * s) * (u + o)
    d = dy.float()
    fma = ((a * (1 - s)).double() * g.double() + 1).float()
    dglu = torch.where((s == 0) & torch.isfinite(g), torch.zeros_like(s), s * fma)
    dgate = torch.where(xg < lim, d * (u + o) * dglu, torch.zeros_like(s))
    dup = torch.where((xu < lim) & (xu > -lim), d * (g * s), torch.zeros_like(s))
    return y.to(out_dtype), ref.merge(dgate, dup, pairs).to(out_dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale", [6.0, 40.0])
def test_gpu_tolerance_covers_fp32_evaluation(dtype, scale):
    """The GPU tests' per-element bounds (reference.clamped_glu.tol with forward_slack /
    backward_slack) hold for an fp32 emulation of the kernels, including gates far enough
    below 0 that sigmoid(alpha g) leaves fp32's normal range (scale 40), and are not loose:
    without the slack terms the fp32 emulation exceeds them."""
    torch.manual_seed(int(scale))
    for alpha, limit, off, pairs in ((1.702, 7.0, 1.0, True), (1.0, 10.0, 0.0, False)):
        x = (scale * torch.randn(300, 512)).to(dtype)
        dy = torch.randn(300, 256).to(dtype)
        y, dx = _fp32_emulation(x, dy, alpha, limit, off, pairs, dtype)
        fr, br = ref.forward(x, alpha, limit, off, pairs), ref.backward(dy, x, alpha, limit, off, pairs)
        tf = ref.tol(dtype, fr, ref.forward_slack(x, alpha, limit, off, pairs))
        tb = ref.tol(dtype, br, ref.backward_slack(dy, x, alpha, limit, off, pairs))
        assert bool(((y.double() - fr).abs() <= tf).all())
        assert bool(((dx.double() - br).abs() <= tb).all())
        if dtype == torch.float32:  # the rounding term alone is too tight for fp32's evaluation
            bare = ref.tol(dtype, br, torch.zeros_like(br))
            assert bool(((dx.double() - br).abs() > bare).any())
