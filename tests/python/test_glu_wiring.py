"""The SwiGLU / GeGLU custom ops' plumbing on the CPU: schemas, fake kernels, autograd, the
in-place backward (dA over A, dB over B), strided halves, torch.compile, the MLP modules and the
friendly input errors. The executor is replaced by a float64 reference "launcher" honouring the
contract of kernels/ops/glu.cc; the kernels themselves are tested in tests/gpu/test_glu.py."""

import types

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

import ligerd  # noqa: E402
from ligerd.transformers import (LigerGEGLUMLP, LigerSwiGLUMLP, liger_geglu,  # noqa: E402
                                 liger_swiglu)

def torch_ref(a, b, kind):
    act = torch.nn.functional.silu(a) if kind == "swiglu" else torch.nn.functional.gelu(a, approximate="tanh")
    return act * b


FNS = {"swiglu": liger_swiglu, "geglu": liger_geglu}


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (2, 5, 33), (2, 3, 4, 9), (9,)])
@pytest.mark.parametrize("kind", ["swiglu", "geglu"])
def test_matches_torch_and_writes_grads_in_place(launcher, kind, shape):
    torch.manual_seed(0)
    a0, b0 = torch.randn(shape, dtype=torch.float32), torch.randn(shape, dtype=torch.float32)
    dc = torch.randn(shape, dtype=torch.float32)
    # Non-leaf inputs, as in the MLP (outputs of gate_proj / up_proj).
    pa, pb = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    a, b = pa * 1, pb * 1
    c = FNS[kind](a, b)
    a2, b2 = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    c2 = torch_ref(a2, b2, kind)
    torch.testing.assert_close(c, c2)
    c.backward(dc)
    c2.backward(dc)
    torch.testing.assert_close(pa.grad, a2.grad)
    torch.testing.assert_close(pb.grad, b2.grad)
    (fop, fts, _), (bop, bts, _) = launcher.calls
    assert fop == f"{kind}_fwd" and bop == f"{kind}_bwd"
    assert bts[3][1] == bts[1][1] and bts[4][1] == bts[2][1], "dA over A, dB over B in eager"
    torch.testing.assert_close(a.detach(), a2.grad), "a now holds its gradient (Liger semantics)"


@pytest.mark.parametrize("kind", ["swiglu", "geglu"])
def test_halves_of_one_tensor_are_read_in_place_and_written_out_of_place(launcher, kind):
    rows, f = 4, 6
    x = torch.randn(rows, 2 * f, dtype=torch.float32, requires_grad=True)
    a, b = x[:, :f], x[:, f:]
    c = FNS[kind](a, b)
    x2 = x.detach().clone().requires_grad_()
    c2 = torch_ref(x2[:, :f], x2[:, f:], kind)
    torch.testing.assert_close(c, c2)
    dc = torch.randn(rows, f, dtype=torch.float32)
    c.backward(dc)
    c2.backward(dc)
    torch.testing.assert_close(x.grad, x2.grad)
    (_, fts, _), (_, bts, _) = launcher.calls
    assert fts[0][1] == x.data_ptr() and fts[0][2] == (2 * f, 1), "no copy of the strided half"
    assert bts[3][1] != bts[1][1] and bts[4][1] != bts[2][1], "out of place for strided views"
    torch.testing.assert_close(x.detach(), x2.detach()), "x itself is untouched"


def test_same_tensor_twice_is_out_of_place(launcher):
    a = torch.randn(3, 8, dtype=torch.float32, requires_grad=True)
    liger_swiglu(a, a).sum().backward()
    _, bts, _ = launcher.calls[1]
    assert bts[3][1] != bts[1][1]
    a2 = a.detach().clone().requires_grad_()
    torch_ref(a2, a2, "swiglu").sum().backward()
    torch.testing.assert_close(a.grad, a2.grad)


def test_empty_input(launcher):
    a = torch.empty(0, 8, requires_grad=True)
    c = liger_swiglu(a, torch.empty(0, 8))
    assert c.shape == (0, 8)
    c.sum().backward()
    assert launcher.calls == []


@pytest.mark.parametrize("kind", ["swiglu", "geglu"])
def test_compile_fullgraph_is_out_of_place(launcher, kind):
    torch._dynamo.reset()
    fn = FNS[kind]

    def f(a, b):
        return fn(a * 2, b) * 3

    a = torch.randn(4, 16, dtype=torch.float32, requires_grad=True)
    b = torch.randn(4, 16, dtype=torch.float32, requires_grad=True)
    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    y = cf(a, b)
    y.sum().backward()
    a2, b2 = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    (torch_ref(a2 * 2, b2, kind) * 3).sum().backward()
    torch.testing.assert_close(y, (torch_ref(a2 * 2, b2, kind) * 3))
    torch.testing.assert_close(a.grad, a2.grad)
    torch.testing.assert_close(b.grad, b2.grad)
    bwd = [c for c in launcher.calls if c[0].endswith("_bwd")]
    assert bwd and all(c[1][3][1] != c[1][1][1] for c in bwd), "compiled backward is out of place"


def _config(act="silu"):
    return types.SimpleNamespace(hidden_size=8, intermediate_size=12, hidden_act=act)


@pytest.mark.parametrize("cls,kind", [(LigerSwiGLUMLP, "swiglu"), (LigerGEGLUMLP, "geglu")])
def test_mlp_modules(launcher, cls, kind):
    torch.manual_seed(1)
    m = cls(_config("gelu_pytorch_tanh" if kind == "geglu" else "silu")).float()
    assert m.gate_proj.bias is None and m.up_proj.bias is None and m.down_proj.bias is None
    assert m.gate_proj.weight.shape == (12, 8) and m.down_proj.weight.shape == (8, 12)
    x = torch.randn(2, 3, 8, dtype=torch.float32, requires_grad=True)
    y = m(x)
    y.square().sum().backward()
    grads = [p.grad.clone() for p in m.parameters()] + [x.grad.clone()]
    m.zero_grad()
    x2 = x.detach().clone().requires_grad_()
    y2 = m.down_proj(torch_ref(m.gate_proj(x2), m.up_proj(x2), kind))
    y2.square().sum().backward()
    torch.testing.assert_close(y, y2)
    for g, g2 in zip(grads, [p.grad for p in m.parameters()] + [x2.grad]):
        torch.testing.assert_close(g, g2)


def test_swiglu_mlp_rejects_other_activations():
    LigerSwiGLUMLP(_config("swish"))
    with pytest.raises(ValueError, match="gelu"):
        LigerSwiGLUMLP(_config("gelu"))


@pytest.mark.parametrize("case", ["shape", "dtype", "fp64_cpu", "int", "not_tensor", "5d"])
def test_bad_inputs_name_the_op(case):
    a = torch.randn(4, 8)
    b = torch.randn(4, 8)
    if case == "shape":
        b = torch.randn(4, 9)
    elif case == "dtype":
        b = b.half()
    elif case == "int":
        a, b = a.int(), b.int()
    elif case == "not_tensor":
        b = 3.0
    elif case == "5d":
        a, b = a.view(1, 1, 1, 4, 8), b.view(1, 1, 1, 4, 8)
    for fn, op in ((liger_swiglu, "swiglu"), (liger_geglu, "geglu")):
        with pytest.raises(ligerd.OpInputError, match=op):
            fn(a, b)
