"""LayerNorm custom ops' plumbing on the CPU: schemas, fake kernels, autograd (dX, dW, dB),
optional affine parameters, flattening, torch.compile(fullgraph=True), input errors. The executor
is replaced by a float64 reference launcher honouring kernels/ops/layer_norm.cc's contract."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

import ligerd  # noqa: E402
from ligerd import _backend  # noqa: E402
from ligerd.ops.layer_norm import LigerLayerNormFunction  # noqa: E402
from ligerd.transformers import LigerLayerNorm, liger_layer_norm  # noqa: E402

from ligerd.testing import ref_executor  # noqa: E402


@pytest.fixture
def launcher(monkeypatch):
    """The executor replaced by its float64 reference (tests/python/ref_executor.py)."""
    return ref_executor.install(monkeypatch, describe=ref_executor.shape_dtype_ptr)


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (2, 5, 33), (2, 3, 4, 9), (9,)])
@pytest.mark.parametrize("affine", ["wb", "w", "b", "none"])
def test_matches_torch_layer_norm(launcher, shape, affine):
    torch.manual_seed(0)
    n = shape[-1]
    x = (0.5 + torch.randn(shape)).requires_grad_()
    w = (torch.rand(n) + 0.5).requires_grad_() if "w" in affine else None
    b = torch.randn(n).requires_grad_() if "b" in affine else None
    y = liger_layer_norm(x, w, b, 1e-5)
    assert y.shape == x.shape and y.dtype == x.dtype
    dy = torch.randn(shape)
    y.backward(dy)
    x2 = x.detach().clone().requires_grad_()
    w2 = w.detach().clone().requires_grad_() if w is not None else None
    b2 = b.detach().clone().requires_grad_() if b is not None else None
    y2 = torch.nn.functional.layer_norm(x2, (n,), w2, b2, 1e-5)
    y2.backward(dy)
    torch.testing.assert_close(y, y2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-4)
    if w is not None:
        torch.testing.assert_close(w.grad, w2.grad, rtol=1e-4, atol=1e-4)
    if b is not None:
        torch.testing.assert_close(b.grad, b2.grad, rtol=1e-4, atol=1e-4)
    assert [c[0] for c in launcher.calls] == ["layer_norm_fwd", "layer_norm_bwd"]


def test_contract_positions(launcher):
    x = torch.randn(2, 3, 8, requires_grad=True)
    w = torch.rand(8, requires_grad=True)
    b = torch.rand(8, requires_grad=True)
    liger_layer_norm(x, w, b, 1e-5).sum().backward()
    (op, ts, sc), (op2, ts2, sc2) = launcher.calls
    assert op == "layer_norm_fwd" and sc == [1e-5]
    assert [t[0] for t in ts] == [(6, 8), (8,), (8,), (6, 8), (6,), (6,)]
    assert ts[4][1] == ts[5][1] == torch.float32
    assert op2 == "layer_norm_bwd" and sc2 == []
    assert [t[0] for t in ts2] == [(6, 8), (6, 8), (8,), (6,), (6,), (6, 8), (8,), (8,)]
    assert ts2[4][2] == ts[5][2] and ts2[3][2] == ts[4][2], "the saved MEAN/RSTD are passed back"
    assert ts2[5][2] != ts2[0][2], "dX is a fresh buffer"


def test_frozen_parameters_get_no_gradient_buffers(launcher):
    x = torch.randn(4, 8, requires_grad=True)
    w = torch.ones(8)
    b = torch.zeros(8, requires_grad=True)
    liger_layer_norm(x, w, b, 1e-6).sum().backward()
    _, ts, _ = launcher.calls[1]
    assert ts[6] is None and ts[7] is not None
    assert b.grad is not None and x.grad is not None


def test_module_matches_liger_constructor(launcher):
    m = LigerLayerNorm(16)
    assert m.hidden_size == 16 and m.eps == 1e-6 and m.variance_epsilon == 1e-6
    assert torch.all(m.weight == 1) and isinstance(m.bias, torch.nn.Parameter)
    assert torch.all(m.bias == 0), "bias=False: a zero Parameter, as in Liger"
    assert torch.all(LigerLayerNorm(16, init_fn="zeros").weight == 0)
    torch.manual_seed(0)
    assert torch.count_nonzero(LigerLayerNorm(16, bias=True).bias) > 0, "bias=True: randn"
    assert repr(m) == "LigerLayerNorm(16, eps=1e-06)"
    with pytest.raises(ValueError):
        LigerLayerNorm(16, init_fn="rand")
    x = torch.randn(2, 3, 16, requires_grad=True)
    y = m(x)
    y.sum().backward()
    assert m.weight.grad is not None and m.bias.grad is not None
    torch.testing.assert_close(LigerLayerNormFunction.apply(x, m.weight, m.bias, 1e-6), y)


def test_compile_fullgraph(launcher):
    torch._dynamo.reset()
    m = LigerLayerNorm(16, bias=True)
    x = torch.randn(4, 16, requires_grad=True)
    y_c = torch.compile(m, fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(y_c, m(x))
    y_c.sum().backward()
    assert x.grad is not None and m.bias.grad is not None


def test_fake_kernels_give_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        x = torch.empty(6, 8)
        w = torch.empty(8)
        y, mean, rstd = torch.ops.ligerd.layer_norm_fwd(x, w, None, 1e-6)
        assert y.shape == (6, 8) and mean.shape == rstd.shape == (6,) and rstd.dtype == torch.float32
        dx, dw, db = torch.ops.ligerd.layer_norm_bwd(x, x, w, None, mean, rstd, True, False)
        assert dx.shape == (6, 8) and dw.shape == (8,) and db.shape == (0,)


@pytest.mark.parametrize("bad,match", [
    ("cpu", "CUDA tensor"), ("w_size", r"W must have shape \(8,\)"), ("b_dtype", "mixed dtypes"),
    ("wb_dtypes", "W is torch.float32 but B is torch.bfloat16"), ("int", "dtype torch.int32"),
    ("empty_hidden", "hidden size 0")])
def test_input_errors_name_the_op(bad, match):
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    w = torch.ones(8, dtype=torch.bfloat16)
    b = torch.zeros(8, dtype=torch.bfloat16)
    if bad == "w_size":
        w = torch.ones(7, dtype=torch.bfloat16)
    elif bad == "b_dtype":
        b = b.half()
    elif bad == "wb_dtypes":
        w = w.float()
    elif bad == "int":
        x = torch.ones(4, 8, dtype=torch.int32)
    elif bad == "empty_hidden":
        x = torch.randn(4, 0, dtype=torch.bfloat16)
    if bad != "cpu":
        _backend._test_launcher = lambda *a: None  # the CPU is allowed only under a test launcher
    try:
        with pytest.raises(ligerd.OpInputError, match=match) as ei:
            liger_layer_norm(x, w, b, 1e-6)
        assert "ligerd op layer_norm" in str(ei.value)
    finally:
        _backend._test_launcher = None
