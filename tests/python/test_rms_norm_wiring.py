"""The RMSNorm custom ops' plumbing on the CPU: schemas, fake kernels, autograd, flattening,
in_place, torch.compile(fullgraph=True), and the friendly input errors.

The executor is replaced by a float64 reference "launcher" that honours the same tensor/scalar
contract as kernels/ops/rms_norm.cc, so everything except the CUDA kernels themselves is exercised
here (the kernels are tested on the GPU in tests/gpu/test_rms_norm.py)."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

import ligerd  # noqa: E402
from ligerd import _backend  # noqa: E402
from ligerd.ops import rms_norm as rms_ops  # noqa: E402
from ligerd.transformers import LigerRMSNorm, liger_rms_norm  # noqa: E402

from ligerd.testing import ref_executor  # noqa: E402


@pytest.fixture
def launcher(monkeypatch):
    """The executor replaced by its float64 reference (tests/python/ref_executor.py)."""
    return ref_executor.install(monkeypatch, describe=ref_executor.shape_and_ptr)


def hf_rms_norm(x, w, eps, offset=0.0):
    """Hugging Face LlamaRMSNorm math (llama casting), differentiable with plain autograd."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    h = h.to(x.dtype)
    return h if w is None else h * (offset + w)


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (2, 5, 33), (2, 3, 4, 9), (9,)])
@pytest.mark.parametrize("in_place", [True, False])
@pytest.mark.parametrize("has_w", [True, False])
def test_matches_hf_eager(launcher, shape, in_place, has_w):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float32, requires_grad=True)
    w = (torch.rand(shape[-1]) + 0.5).requires_grad_() if has_w else None
    y = liger_rms_norm(x, w, 1e-6, in_place=in_place)
    assert y.shape == x.shape and y.dtype == x.dtype
    dy = torch.randn(shape)
    y.backward(dy.clone())
    x2 = x.detach().clone().requires_grad_()
    w2 = w.detach().clone().requires_grad_() if has_w else None
    y2 = hf_rms_norm(x2, w2, 1e-6)
    y2.backward(dy)
    torch.testing.assert_close(y, y2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)
    if has_w:
        torch.testing.assert_close(w.grad, w2.grad, rtol=1e-4, atol=1e-5)
    assert [c[0] for c in launcher.calls] == ["rms_norm_fwd", "rms_norm_bwd"]


def test_in_place_writes_dx_over_dy(launcher):
    x = torch.randn(4, 8, requires_grad=True)
    w = torch.ones(8, requires_grad=True)
    y = liger_rms_norm(x, w, 1e-6, in_place=True)
    y.backward(torch.randn(4, 8))
    _, fwd_t, _ = launcher.calls[0]
    _, bwd_t, _ = launcher.calls[1]
    assert bwd_t[0][1] == bwd_t[4][1], "in_place: dX must be written over dY"
    launcher.calls.clear()
    y = liger_rms_norm(x, w, 1e-6, in_place=False)
    y.backward(torch.randn(4, 8))
    _, bwd_t, _ = launcher.calls[1]
    assert bwd_t[0][1] != bwd_t[4][1]


def test_contract_positions(launcher):
    x = torch.randn(2, 3, 8)
    w = torch.rand(8, requires_grad=True)
    y = liger_rms_norm(x, w, 1e-5, offset=1.0, casting_mode="gemma", in_place=False)
    y.sum().backward()
    (op, ts, sc), (op2, ts2, sc2) = launcher.calls
    assert op == "rms_norm_fwd" and ts[0][0] == (6, 8) and ts[1][0] == (8,) and ts[2][0] == (6, 8)
    assert ts[3][0] == (6,) and sc == [1e-5, 1.0, 1.0]
    assert op2 == "rms_norm_bwd" and sc2 == [1.0, 1.0] and ts2[5][0] == (8,)


def test_frozen_weight_gets_no_dw(launcher):
    x = torch.randn(4, 8, requires_grad=True)
    w = torch.ones(8)  # requires_grad False
    liger_rms_norm(x, w, 1e-6).sum().backward()
    _, ts, _ = launcher.calls[1]
    assert ts[5] is None and x.grad is not None


def test_non_contiguous_input(launcher):
    base = torch.randn(8, 6, requires_grad=True)
    x = base.t()  # (6, 8), non-contiguous
    w = torch.rand(8) + 0.5
    y = liger_rms_norm(x, w, 1e-6)
    torch.testing.assert_close(y, hf_rms_norm(x.detach(), w, 1e-6), rtol=1e-5, atol=1e-6)
    y.sum().backward()
    assert base.grad.shape == base.shape


def test_row_strided_input_is_not_copied(launcher):
    """A slice x[..., :n] of a wider buffer has a contiguous last dim and one row pitch: the
    kernels read it in place; a transposed input is copied first."""
    wide = torch.randn(2, 3, 16)
    x = wide[..., :8]
    y = liger_rms_norm(x, None, 1e-6)
    torch.testing.assert_close(y, hf_rms_norm(x, None, 1e-6), rtol=1e-5, atol=1e-6)
    _, ts, _ = launcher.calls[-1]
    assert ts[0] == ((6, 8), wide.data_ptr())
    assert rms_ops._as_rows(x).stride() == (16, 1)
    t = torch.randn(8, 6).t()
    assert rms_ops._as_rows(t).is_contiguous() and rms_ops._as_rows(t).data_ptr() != t.data_ptr()
    # rows that cannot be flattened with one stride (a strided middle dim) are copied too
    z = torch.randn(4, 6, 8)[:, ::2, :]
    r = rms_ops._as_rows(z)
    assert r.shape == (12, 8) and torch.equal(r, z.reshape(12, 8))


def test_module(launcher):
    m = LigerRMSNorm(16, eps=1e-5)
    assert m.weight.shape == (16,) and torch.all(m.weight == 1)
    assert LigerRMSNorm(16, init_fn="zeros").weight.abs().sum() == 0
    assert LigerRMSNorm(16, elementwise_affine=False).weight is None
    x = torch.randn(2, 3, 16)
    torch.testing.assert_close(m(x), hf_rms_norm(x, m.weight.detach(), 1e-5), rtol=1e-5, atol=1e-6)
    assert "eps=1e-05" in repr(m)
    with pytest.raises(ValueError):
        LigerRMSNorm(16, init_fn="xavier")
    with pytest.raises(ligerd.OpInputError):
        LigerRMSNorm(16, casting_mode="fp8")


def test_opcheck(launcher):
    x = torch.randn(5, 12)
    w = torch.rand(12) + 0.5
    y, rstd = torch.ops.ligerd.rms_norm_fwd(x, w, 1e-6, 0.0, 0, False)
    dy = torch.randn(5, 12)
    torch.library.opcheck(torch.ops.ligerd.rms_norm_fwd.default, (x, w, 1e-6, 0.0, 0, False))
    torch.library.opcheck(torch.ops.ligerd.rms_norm_fwd.default, (x, None, 1e-6, 0.0, 1, True))
    torch.library.opcheck(torch.ops.ligerd.rms_norm_bwd.default, (dy, x, w, rstd, 0.0, 0, True))
    torch.library.opcheck(torch.ops.ligerd.rms_norm_bwd_inplace.default,
                          (dy.clone(), x, w, rstd, 0.0, 0, True))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph(launcher, backend):
    torch._dynamo.reset()

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(16, 16)
            self.norm = LigerRMSNorm(16)

        def forward(self, x):
            return self.norm(self.lin(x)).relu()

    torch.manual_seed(0)
    m = Block()
    x = torch.randn(2, 7, 16, requires_grad=True)
    y_eager = m(x)
    y_eager.square().sum().backward()
    g_eager = (x.grad.clone(), m.norm.weight.grad.clone())
    x.grad = None
    m.zero_grad()
    cm = torch.compile(m, fullgraph=True, backend=backend)
    y = cm(x)
    y.square().sum().backward()
    torch.testing.assert_close(y, y_eager)
    torch.testing.assert_close(x.grad, g_eager[0])
    torch.testing.assert_close(m.norm.weight.grad, g_eager[1])
    # under compile the backward is the out-of-place op (AOTAutograd cannot mutate dY)
    bwd = [c for c in launcher.calls if c[0] == "rms_norm_bwd"]
    assert bwd and bwd[-1][1][0][1] != bwd[-1][1][4][1]


# --- input errors (no launcher: the real path) ------------------------------------------------

def test_cpu_tensor_rejected():
    with pytest.raises(ligerd.OpInputError, match="rms_norm.*CUDA tensor"):
        liger_rms_norm(torch.randn(2, 4), torch.ones(4), 1e-6)


@pytest.mark.parametrize("bad,match", [
    (lambda: (torch.randn(2, 4), torch.ones(5)), "shape \\(4,\\)"),
    (lambda: (torch.randn(2, 4), torch.ones(4, dtype=torch.float64)), "mixed dtypes"),
    (lambda: (torch.randn(2, 4, dtype=torch.bfloat16), torch.ones(4, dtype=torch.float16)), "mixed dtypes"),
    (lambda: (torch.randn(1, 1, 1, 2, 4), torch.ones(4)), "1 to 4 dimensions"),
    (lambda: (torch.randn(2, 4).to(torch.float64), None), "dtype torch.float64"),
    (lambda: (torch.randn(2, 0), None), "hidden size 0"),
    (lambda: ([1.0, 2.0], None), "torch.Tensor"),
])
def test_bad_inputs_named(launcher, bad, match):
    x, w = bad()
    with pytest.raises(ligerd.OpInputError, match=match) as ei:
        liger_rms_norm(x, w, 1e-6)
    assert "rms_norm" in str(ei.value) and ei.value.op == "rms_norm"
    assert not launcher.calls


def test_bad_casting_mode(launcher):
    with pytest.raises(ligerd.OpInputError, match="casting_mode"):
        liger_rms_norm(torch.randn(2, 4), None, 1e-6, casting_mode="bf16")
    assert rms_ops.casting_mode_id("GEMMA") == 1 and rms_ops.casting_mode_id(2) == 2
    with pytest.raises(ValueError):
        rms_ops.casting_mode_id(True)


def test_missing_extension_is_a_clear_error(monkeypatch):
    """On a machine without the built extension, a CUDA-looking call fails with a LigerdError
    that says how to build it (not an ImportError from deep inside)."""
    monkeypatch.setenv("LIGERD_NO_DAEMON", "1")
    monkeypatch.setattr(_backend, "_C", None)
    import builtins
    real_import = builtins.__import__

    def fake_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "ligerd" and fromlist and "_C" in fromlist:
            raise ImportError("no module named ligerd._C (test)")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ligerd.LigerdError, match="pip install --no-build-isolation"):
        _backend.launch("rms_norm_fwd", [], [])
