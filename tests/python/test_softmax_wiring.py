"""The softmax custom ops' plumbing on the CPU: schemas, fake kernels, autograd against torch,
flattening and strided inputs, torch.compile(fullgraph=True), and the friendly input errors.

The executor is replaced by a float64 reference "launcher" that honours the same tensor/scalar
contract as kernels/ops/softmax.cc, so everything except the CUDA kernels themselves is exercised
here (the kernels are tested on the GPU in tests/gpu/test_softmax.py)."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

import ligerd  # noqa: E402
from ligerd.ops import softmax as softmax_ops  # noqa: E402
from ligerd.testing.compile_check import assert_compiled_grads_match  # noqa: E402
from ligerd.transformers import LigerSoftmax, liger_softmax  # noqa: E402


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (2, 5, 33), (2, 3, 4, 9), (9,), (4, 1)])
def test_matches_torch_eager(launcher, shape):
    torch.manual_seed(0)
    x = (3 * torch.randn(shape)).requires_grad_()
    y = liger_softmax(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    dy = torch.randn(shape)
    y.backward(dy)
    # torch in float64 from the same inputs: the reference executor rounds each result once
    x2 = x.detach().double().requires_grad_()
    y2 = torch.softmax(x2, dim=-1)
    y2.backward(dy.double())
    torch.testing.assert_close(y, y2.float(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(x.grad, x2.grad.float(), rtol=1e-5, atol=1e-6)
    assert [c[0] for c in launcher.calls] == ["softmax_fwd", "softmax_bwd"]


def test_contract_positions(launcher):
    """softmax_fwd gets [X, Y] and softmax_bwd [dY, Y, dX] as (rows, n) views, no scalars; the
    backward reads the Y the forward wrote and writes a fresh dX (not over dY)."""
    x = torch.randn(2, 3, 8, requires_grad=True)
    y = liger_softmax(x)
    dy = torch.randn(2, 3, 8)
    y.backward(dy)
    (op, ts, sc), (op2, ts2, sc2) = launcher.calls
    assert op == "softmax_fwd" and sc == [] and len(ts) == 2
    assert ts[0][0] == (6, 8) and ts[1][0] == (6, 8) and ts[1][1] == y.data_ptr()
    assert op2 == "softmax_bwd" and sc2 == [] and len(ts2) == 3
    assert [t[0] for t in ts2] == [(6, 8)] * 3
    assert ts2[1][1] == y.data_ptr(), "the backward reads the forward's output"
    assert ts2[2][1] not in (ts2[0][1], ts2[1][1]), "dX is a fresh buffer"
    assert x.grad.data_ptr() == ts2[2][1]


def test_float_dtypes_round_once(launcher):
    torch.manual_seed(1)
    for dt in (torch.float32, torch.bfloat16, torch.float16):
        x = torch.randn(5, 40).to(dt)
        y = liger_softmax(x)
        assert y.dtype == dt
        assert torch.equal(y, torch.softmax(x.double(), -1).to(dt))


def test_module(launcher):
    m = LigerSoftmax()
    assert list(m.parameters()) == []
    x = torch.randn(2, 3, 16)
    torch.testing.assert_close(m(x), torch.softmax(x, -1), rtol=1e-6, atol=1e-7)
    with pytest.raises(TypeError):
        LigerSoftmax(-1)  # Liger's takes no arguments either: always the last dim


def test_row_strided_input_is_not_copied(launcher):
    """A slice x[..., :n] of a wider buffer has a contiguous last dim and one row pitch: the
    kernels read it in place; a transposed input is copied first."""
    wide = torch.randn(2, 3, 16)
    x = wide[..., :8]
    y = liger_softmax(x)
    torch.testing.assert_close(y, torch.softmax(x, -1), rtol=1e-6, atol=1e-7)
    _, ts, _ = launcher.calls[-1]
    assert ts[0] == ((6, 8), wide.data_ptr(), (16, 1))
    t = torch.randn(8, 6).t()
    y = liger_softmax(t)
    torch.testing.assert_close(y, torch.softmax(t, -1), rtol=1e-6, atol=1e-7)
    _, ts, _ = launcher.calls[-1]
    assert ts[0][2] == (8, 1) and ts[0][1] != t.data_ptr()


def test_gradient_of_any_layout(launcher):
    """dY from .sum() is an expanded (stride 0) tensor, from a transpose a strided one: the
    backward gets them as rows it can read."""
    x = torch.randn(4, 6, requires_grad=True)
    liger_softmax(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.zeros(4, 6), atol=1e-6, rtol=0)
    _, ts, _ = launcher.calls[-1]
    assert ts[0][2][-1] == 1
    x.grad = None
    g = torch.randn(6, 4)
    liger_softmax(x).backward(g.t())
    x2 = x.detach().clone().requires_grad_()
    torch.softmax(x2, -1).backward(g.t())
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-6)


def test_double_backward_is_not_needed_but_grad_of_y_works(launcher):
    x = torch.randn(3, 5, requires_grad=True)
    (gx,) = torch.autograd.grad(liger_softmax(x), x, torch.randn(3, 5))
    assert gx.shape == (3, 5)


def test_opcheck(launcher):
    x = torch.randn(5, 12)
    y = torch.ops.ligerd.softmax_fwd(x)
    dy = torch.randn(5, 12)
    torch.library.opcheck(torch.ops.ligerd.softmax_fwd.default, (x,))
    torch.library.opcheck(torch.ops.ligerd.softmax_bwd.default, (dy, y))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph(launcher, backend):
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(16, 16)
            self.softmax = LigerSoftmax()

        def forward(self, x):
            return self.softmax(self.lin(x)) * 2.0

    assert_compiled_grads_match(Block, lambda m: m.lin.weight, launcher, backend, ["softmax_fwd", "softmax_bwd"])


# --- input errors (no launcher: the real path, and the launcher never called) ------------------

def test_cpu_tensor_rejected():
    with pytest.raises(ligerd.OpInputError, match="softmax.*CUDA tensor"):
        liger_softmax(torch.randn(2, 4))


@pytest.mark.parametrize("bad,match", [
    (lambda: torch.randn(1, 1, 1, 2, 4), "1 to 4 dimensions"),
    (lambda: torch.tensor(1.0), "1 to 4 dimensions"),
    (lambda: torch.randn(2, 4, dtype=torch.float64), "dtype torch.float64"),
    (lambda: torch.randint(0, 4, (2, 4)), "dtype torch.int64"),
    (lambda: torch.randn(2, 0), "hidden size 0"),
    (lambda: [1.0, 2.0], "torch.Tensor"),
])
def test_bad_inputs_named(launcher, bad, match):
    with pytest.raises(ligerd.OpInputError, match=match) as ei:
        liger_softmax(bad())
    assert "softmax" in str(ei.value) and ei.value.op == "softmax"
    with pytest.raises(ligerd.OpInputError):
        LigerSoftmax()(bad())
    assert not launcher.calls


def test_ops_module_exports():
    assert softmax_ops.softmax_fwd.name == "softmax_fwd"
    assert softmax_ops.softmax_bwd.name == "softmax_bwd"
    assert torch.ops.ligerd.softmax_fwd.default is softmax_ops.softmax_fwd.overload
    from ligerd import transformers
    assert "LigerSoftmax" in transformers.__all__ and "liger_softmax" in transformers.__all__
