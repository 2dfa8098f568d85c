"""Fused add + RMSNorm custom ops' plumbing on the CPU: (Y, S) outputs, dS flowing into dX and
dR, in_place, frozen weight, flattening, torch.compile(fullgraph=True), input errors. The executor
is replaced by a float64 reference launcher honouring kernels/ops/rms_norm.cc's contract for the
fused ops."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

import ligerd  # noqa: E402
from ligerd import _backend  # noqa: E402
from ligerd.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction  # noqa: E402
from ligerd.transformers import LigerFusedAddRMSNorm, liger_fused_add_rms_norm  # noqa: E402

from ligerd.testing import ref_executor  # noqa: E402


@pytest.fixture
def launcher(monkeypatch):
    """The executor replaced by its float64 reference (tests/python/ref_executor.py)."""
    return ref_executor.install(monkeypatch, describe=ref_executor.shape_and_ptr)


def hf_add_rms_norm(x, r, w, eps):
    """``residual + hidden`` then Hugging Face LlamaRMSNorm math, with plain autograd."""
    s = r + x
    h = s.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(s.dtype), s


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (2, 5, 33), (2, 3, 4, 9), (9,)])
@pytest.mark.parametrize("in_place", [True, False])
@pytest.mark.parametrize("use_s", [True, False])
def test_matches_hf_eager(launcher, shape, in_place, use_s):
    torch.manual_seed(0)
    n = shape[-1]
    x = torch.randn(shape, requires_grad=True)
    r = torch.randn(shape, requires_grad=True)
    w = (torch.rand(n) + 0.5).requires_grad_()
    y, s = liger_fused_add_rms_norm(x, r, w, 1e-6, in_place=in_place)
    dy, ds = torch.randn(shape), torch.randn(shape)
    torch.autograd.backward([y, s] if use_s else [y], [dy.clone(), ds] if use_s else [dy.clone()])
    x2, r2, w2 = (t.detach().clone().requires_grad_() for t in (x, r, w))
    y2, s2 = hf_add_rms_norm(x2, r2, w2, 1e-6)
    torch.autograd.backward([y2, s2] if use_s else [y2], [dy, ds] if use_s else [dy])
    torch.testing.assert_close(y, y2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s, s2, rtol=0, atol=0)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(r.grad, r2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w.grad, w2.grad, rtol=1e-4, atol=1e-5)
    ops = [c[0] for c in launcher.calls]
    assert ops == ["fused_add_rms_norm_fwd", "fused_add_rms_norm_bwd"]
    _, bwd_t, _ = launcher.calls[1]
    assert (bwd_t[1] is not None) == use_s, "dS is passed only when a gradient reached S"
    if in_place:
        assert bwd_t[5][1] == bwd_t[0][1], "in_place: dX written over dY"
    else:
        assert bwd_t[5][1] != bwd_t[0][1]


def test_contract_positions_and_saved_s(launcher):
    x = torch.randn(2, 3, 8, requires_grad=True)
    r = torch.randn(2, 3, 8)
    w = torch.rand(8, requires_grad=True)
    y, s = liger_fused_add_rms_norm(x, r, w, 1e-5, offset=1.0, casting_mode="gemma", in_place=False)
    y.sum().backward()
    (op, ts, sc), (op2, ts2, sc2) = launcher.calls
    assert op == "fused_add_rms_norm_fwd" and sc == [1e-5, 1.0, 1.0]
    assert [t[0] for t in ts] == [(6, 8), (6, 8), (8,), (6, 8), (6, 8), (6,)]
    assert op2 == "fused_add_rms_norm_bwd" and sc2 == [1.0, 1.0]
    assert ts2[2][1] == ts[4][1] == s.data_ptr(), "the backward reads the saved S"
    assert r.grad is None and x.grad is not None


def test_frozen_weight(launcher):
    x = torch.randn(4, 8, requires_grad=True)
    liger_fused_add_rms_norm(x, torch.randn(4, 8), torch.ones(8), 1e-6)[0].sum().backward()
    assert launcher.calls[1][1][6] is None


def test_module_matches_liger_constructor(launcher):
    m = LigerFusedAddRMSNorm(16)
    assert torch.all(m.weight == 1) and m.in_place is False and m.casting_mode == "llama"
    assert m.variance_epsilon == 1e-6 and m.offset == 0.0
    assert torch.all(LigerFusedAddRMSNorm(16, init_fn="zeros").weight == 0)
    assert repr(m) == "LigerFusedAddRMSNorm((16,), eps=1e-06, offset=0.0, in_place=False)"
    with pytest.raises(ValueError):
        LigerFusedAddRMSNorm(16, init_fn="rand")
    with pytest.raises(ligerd.OpInputError):
        LigerFusedAddRMSNorm(16, casting_mode="fp8")
    x, r = torch.randn(2, 16), torch.randn(2, 16)
    y, s = m(x, r)
    y2, s2 = LigerFusedAddRMSNormFunction.apply(x, r, m.weight, 1e-6)
    assert torch.equal(y, y2) and torch.equal(s, s2)


def test_compile_fullgraph(launcher):
    torch._dynamo.reset()
    m = LigerFusedAddRMSNorm(16, in_place=True)
    x = torch.randn(4, 16, requires_grad=True)
    r = torch.randn(4, 16, requires_grad=True)
    y, s = torch.compile(m, fullgraph=True, backend="aot_eager")(x, r)
    (y.sum() + s.sum()).backward()
    assert x.grad is not None and torch.equal(x.grad, r.grad)
    # under compile in_place is dropped: the out-of-place backward ran
    _, bwd_t, _ = [c for c in launcher.calls if c[0] == "fused_add_rms_norm_bwd"][-1]
    assert bwd_t[5][1] != bwd_t[0][1]


@pytest.mark.parametrize("bad,match", [
    ("cpu", "CUDA tensor"), ("r_shape", "R has shape"), ("r_dtype", "mixed dtypes"),
    ("no_w", "W is required"), ("w_size", r"W must have shape \(8,\)"), ("mode", "casting_mode")])
def test_input_errors_name_the_op(bad, match):
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    r = torch.randn(4, 8, dtype=torch.bfloat16)
    w = torch.ones(8, dtype=torch.bfloat16)
    mode = "llama"
    if bad == "r_shape":
        r = r[:3]
    elif bad == "r_dtype":
        r = r.half()
    elif bad == "no_w":
        w = None
    elif bad == "w_size":
        w = w[:7]
    elif bad == "mode":
        mode = "fp8"
    if bad != "cpu":
        _backend._test_launcher = lambda *a: None
    try:
        with pytest.raises(ligerd.OpInputError, match=match) as ei:
            liger_fused_add_rms_norm(x, r, w, 1e-6, casting_mode=mode)
        if bad != "mode":
            assert "ligerd op fused_add_rms_norm" in str(ei.value)
    finally:
        _backend._test_launcher = None
