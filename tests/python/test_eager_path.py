"""Which path ligerd's ops take (ligerd/ops/_opdef.py): in eager mode the plain autograd.Function
path, which calls the implementation directly; under torch.compile, make_fx or a FakeTensorMode
the registered torch.library ops. Each launch the float64 reference executor receives is tagged
by whether torch.library's custom-op machinery (torch/_library/) is on the Python stack, which it
is exactly when the call came through the registered op."""

from __future__ import annotations

import sys

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

from ligerd.testing import ref_executor  # noqa: E402
from ligerd.ops import _opdef  # noqa: E402
from ligerd.ops.cross_entropy import cross_entropy  # noqa: E402
from ligerd.ops.fused_add_rms_norm import fused_add_rms_norm  # noqa: E402
from ligerd.ops.fused_linear_cross_entropy import fused_linear_cross_entropy  # noqa: E402
from ligerd.ops.glu import geglu, swiglu  # noqa: E402
from ligerd.ops.layer_norm import layer_norm  # noqa: E402
from ligerd.ops.rms_norm import rms_norm  # noqa: E402
from ligerd.ops.rope import rotary_pos_emb  # noqa: E402


class PathRecorder(ref_executor.RefLauncher):
    def __init__(self):
        super().__init__()
        self.paths = []

    def __call__(self, op, tensors, scalars):
        f, via_library = sys._getframe(1), False
        while f is not None:
            if "torch/_library/" in f.f_code.co_filename.replace("\\", "/"):
                via_library = True
                break
            f = f.f_back
        self.paths.append((op, "custom_op" if via_library else "eager"))
        super().__call__(op, tensors, scalars)


@pytest.fixture
def rec(monkeypatch):
    from ligerd import _backend
    r = PathRecorder()
    monkeypatch.setattr(_backend, "_test_launcher", r)
    return r


def _leaf(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype).requires_grad_()


# One forward + backward per op family: (name, build inputs, run -> tensor to sum).
def _rms(in_place):
    def run(x, w):
        return rms_norm(x * 1.0, w, 1e-6, 0.0, "llama", in_place)
    return lambda: (_leaf(3, 5, 16), _leaf(16)), run


def _fused_add():
    def run(x, r, w):
        y, s = fused_add_rms_norm(x * 1.0, r * 1.0, w, 1e-6)
        return y + s
    return lambda: (_leaf(6, 16), _leaf(6, 16), _leaf(16)), run


def _ln():
    return lambda: (_leaf(6, 16), _leaf(16), _leaf(16)), lambda x, w, b: layer_norm(x, w, b, 1e-5)


def _glu(fn):
    return lambda: (_leaf(6, 32), _leaf(6, 32)), lambda a, b: fn(a * 1.0, b * 1.0)


def _rope():
    def run(q, k):
        cos, sin = torch.cos(torch.arange(16.0)).repeat(4, 1), torch.sin(torch.arange(16.0)).repeat(4, 1)
        qo, ko = rotary_pos_emb(q * 1.0, k * 1.0, cos[None], sin[None])
        return qo.sum() + ko.sum()
    return lambda: (_leaf(2, 4, 4, 16), _leaf(2, 2, 4, 16)), run


def _ce():
    def run(x):
        return cross_entropy(x * 1.0, torch.tensor([1, 2, -100, 4, 5, 0]))[0]
    return lambda: (_leaf(6, 32),), run


CASES = {
    "rms_norm": _rms(True), "rms_norm_out_of_place": _rms(False), "fused_add_rms_norm": _fused_add(),
    "layer_norm": _ln(), "swiglu": _glu(swiglu), "geglu": _glu(geglu), "rope": _rope(),
    "cross_entropy": _ce(),
}


@pytest.mark.parametrize("case", list(CASES))
def test_eager_calls_take_the_plain_path(rec, case):
    make, run = CASES[case]
    args = make()
    run(*args).sum().backward()
    assert rec.paths, "nothing was launched"
    assert all(p == "eager" for _, p in rec.paths), rec.paths
    assert all(a.grad is not None for a in args)


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_calls_take_the_custom_ops(rec, case):
    make, run = CASES[case]
    torch._dynamo.reset()
    args = make()
    eager_args = [a.detach().clone().requires_grad_() for a in args]
    out = torch.compile(run, fullgraph=True, backend="aot_eager")(*args).sum()
    out.backward()
    assert rec.paths, "nothing was launched"
    assert all(p == "custom_op" for _, p in rec.paths), rec.paths
    # and the two paths compute the same thing
    rec.paths.clear()
    ref = run(*eager_args).sum()
    ref.backward()
    assert all(p == "eager" for _, p in rec.paths), rec.paths
    torch.testing.assert_close(out, ref)
    for a, e in zip(args, eager_args):
        torch.testing.assert_close(a.grad, e.grad)


def test_make_fx_traces_the_registered_ops(rec):
    from torch.fx.experimental.proxy_tensor import make_fx
    x, w = torch.randn(4, 16), torch.randn(16)
    g = make_fx(lambda x, w: rms_norm(x, w, 1e-6))(x, w)
    targets = {n.target for n in g.graph.nodes if n.op == "call_function"}
    assert torch.ops.ligerd.rms_norm_fwd.default in targets, g.graph
    assert rec.paths and all(p == "custom_op" for _, p in rec.paths), rec.paths


def test_fake_tensor_mode_uses_the_fake_kernels(rec):
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        assert not _opdef.eager()
        x, w = torch.empty(4, 16), torch.empty(16)
        y = rms_norm(x, w, 1e-6)
        a = torch.empty(4, 32)
        c = swiglu(a, torch.empty(4, 32))
    assert y.shape == (4, 16) and c.shape == (4, 32)
    assert rec.paths == []  # a fake tensor never reaches the executor


def test_flce_eager_and_compiled_paths(rec):
    """fused_linear_cross_entropy in eager mode launches everything on the plain path; compiled
    (fullgraph: no graph break) its whole chunk loop is one registered op,
    ligerd::fused_linear_cross_entropy_fwd, so every launch is under torch.library's machinery."""
    x, W = _leaf(8, 16), _leaf(32, 16)
    t = torch.randint(0, 32, (8,))
    fused_linear_cross_entropy(x, W, t)[0].backward()
    assert rec.paths and all(p == "eager" for _, p in rec.paths), rec.paths
    rec.paths.clear()
    torch._dynamo.reset()
    f = torch.compile(lambda x, W: fused_linear_cross_entropy(x, W, t)[0] * 2.0, fullgraph=True,
                      backend="aot_eager")
    f(x, W).backward()
    assert rec.paths and all(p == "custom_op" for _, p in rec.paths), rec.paths


def test_eager_in_place_writes_bump_version_counters(rec):
    """The eager path bumps the version of what an op declares mutated, as the registered op
    does: SwiGLU's in-place backward writes dA over A and dB over B."""
    a, b = _leaf(4, 32), _leaf(4, 32)
    a2, b2 = a * 1.0, b * 1.0
    c = swiglu(a2, b2)
    va, vb = a2._version, b2._version
    c.sum().backward()
    assert a2._version > va and b2._version > vb
    assert all(p == "eager" for _, p in rec.paths)


def test_eager_grad_fn_is_the_plain_function(rec):
    from ligerd.ops import layer_norm as ln
    x, w, b = _leaf(4, 16), _leaf(16), _leaf(16)
    y, _, _ = ln.layer_norm_fwd(x, w, b, 1e-5)
    assert type(y.grad_fn).__name__ == "layer_norm_fwd_eagerBackward"
    with torch.no_grad():
        y, _, _ = ln.layer_norm_fwd(x, w, b, 1e-5)
    assert y.grad_fn is None
