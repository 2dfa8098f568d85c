"""The squared-ReLU custom ops' plumbing on the CPU: schemas, fake kernels, autograd against torch
(transformers' ReLUSquaredActivation is relu then square), flattening of any shape, strided and
empty inputs, torch.compile(fullgraph=True), the Liger-named surface and the friendly input errors.

The executor is replaced by a float64 reference "launcher" that honours the same tensor/scalar
contract as kernels/ops/relu_squared.cc, so everything except the CUDA kernels themselves is
exercised here (the kernels are tested on the GPU in tests/gpu/test_relu_squared.py)."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

import ligerd  # noqa: E402
from ligerd.ops import relu_squared as relu2_ops  # noqa: E402
from ligerd.testing.compile_check import assert_compiled_grads_match  # noqa: E402
from ligerd.testing.reference import relu_squared as ref  # noqa: E402
from ligerd.transformers import LigerReLUSquared, liger_relu_squared  # noqa: E402
from ligerd.transformers.functional import LigerReLUSquaredFunction  # noqa: E402


def torch_relu2(x):
    """transformers' ReLUSquaredActivation.forward."""
    return torch.square(torch.nn.functional.relu(x))


@pytest.mark.parametrize("shape", [(1,), (1, 1), (3, 17), (2, 5, 33), (2, 3, 4, 9), (4097,),
                                   (2, 1, 3, 2, 5)])
def test_matches_torch_eager(launcher, shape):
    torch.manual_seed(sum(shape))
    x = (3 * torch.randn(shape)).requires_grad_()
    y = liger_relu_squared(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    dy = torch.randn(shape)
    y.backward(dy)
    x2 = x.detach().double().requires_grad_()
    y2 = torch_relu2(x2)
    y2.backward(dy.double())
    # The reference executor computes in float64 and rounds once: what fp32 torch gives to 1 ulp.
    torch.testing.assert_close(y, y2.float(), rtol=2 ** -23, atol=0)
    torch.testing.assert_close(x.grad, x2.grad.float(), rtol=2 ** -23, atol=0)
    assert [c[0] for c in launcher.calls] == ["relu_squared_fwd", "relu_squared_bwd"]


def test_contract_positions(launcher):
    """relu_squared_fwd gets [X, Y] and relu_squared_bwd [dY, X, dX] as (rows, n) views, no
    scalars; the backward reads the forward's input X and writes a fresh dX (not over dY)."""
    x = torch.randn(2, 3, 8, requires_grad=True)
    y = liger_relu_squared(x)
    dy = torch.randn(2, 3, 8)
    y.backward(dy)
    (op, ts, sc), (op2, ts2, sc2) = launcher.calls
    assert op == "relu_squared_fwd" and sc == [] and len(ts) == 2
    assert ts[0][0] == (6, 8) and ts[1][0] == (6, 8)
    assert ts[0][1] == x.data_ptr() and ts[1][1] == y.data_ptr()
    assert op2 == "relu_squared_bwd" and sc2 == [] and len(ts2) == 3
    assert [t[0] for t in ts2] == [(6, 8)] * 3
    assert ts2[1][1] == x.data_ptr(), "the backward reads the forward's input"
    assert ts2[2][1] not in (ts2[0][1], ts2[1][1]), "dX is a fresh buffer"
    assert x.grad.data_ptr() == ts2[2][1]


def test_edge_values(launcher):
    """0, -0, negatives give 0 and a 0 gradient; NaN stays NaN; +inf squares to inf; where x <= 0
    an inf/NaN dY still gives 0, as torch's relu backward."""
    x = torch.tensor([[0.0, -0.0, -3.0, 2.0, float("nan"), float("inf"), float("-inf"), -1.0]],
                     requires_grad=True)
    y = liger_relu_squared(x)
    x2 = x.detach().clone().requires_grad_()
    y2 = torch_relu2(x2)
    torch.testing.assert_close(y, y2, equal_nan=True)
    dy = torch.tensor([[1.0, 1.0, float("inf"), 0.5, 1.0, 1.0, 1.0, float("nan")]])
    y.backward(dy)
    y2.backward(dy)
    torch.testing.assert_close(x.grad, x2.grad, equal_nan=True)
    assert x.grad[0, 2] == 0 and x.grad[0, 7] == 0


def test_float_dtypes_round_once(launcher):
    torch.manual_seed(1)
    for dt in (torch.float32, torch.bfloat16, torch.float16):
        x = (4 * torch.randn(5, 40)).to(dt)
        y = liger_relu_squared(x)
        assert y.dtype == dt
        assert torch.equal(y, ref.exact(dt, ref.forward(x)))
        # For 16-bit inputs the fp32 product is exact, so torch's own fp32 math agrees bitwise.
        assert torch.equal(y, torch_relu2(x.float()).to(dt))


def test_module_and_function(launcher):
    m = LigerReLUSquared()
    assert list(m.parameters()) == []
    x = torch.randn(2, 3, 16)
    torch.testing.assert_close(m(x), torch_relu2(x))
    torch.testing.assert_close(LigerReLUSquaredFunction.apply(x), torch_relu2(x))
    with pytest.raises(TypeError):
        LigerReLUSquared(1)  # Liger's takes no arguments either


def test_row_strided_input_is_not_copied(launcher):
    """A slice x[..., :n] of a wider buffer has a contiguous last dim and one row pitch: the
    kernels read it in place; a transposed input is copied first."""
    wide = torch.randn(2, 3, 16)
    x = wide[..., :8]
    y = liger_relu_squared(x)
    torch.testing.assert_close(y, torch_relu2(x))
    assert y.is_contiguous()
    _, ts, _ = launcher.calls[-1]
    assert ts[0] == ((6, 8), wide.data_ptr(), (16, 1))
    t = torch.randn(8, 6).t()
    y = liger_relu_squared(t)
    torch.testing.assert_close(y, torch_relu2(t))
    _, ts, _ = launcher.calls[-1]
    assert ts[0][2] == (8, 1) and ts[0][1] != t.data_ptr()


def test_gradient_of_any_layout(launcher):
    """dY from .sum() is an expanded (stride 0) tensor, from a transpose a strided one: the
    backward gets them as rows it can read."""
    x = torch.randn(4, 6, requires_grad=True)
    liger_relu_squared(x).sum().backward()
    torch.testing.assert_close(x.grad, 2 * torch.relu(x.detach()))
    _, ts, _ = launcher.calls[-1]
    assert ts[0][2][-1] == 1
    x.grad = None
    g = torch.randn(6, 4)
    liger_relu_squared(x).backward(g.t())
    x2 = x.detach().clone().requires_grad_()
    torch_relu2(x2).backward(g.t())
    torch.testing.assert_close(x.grad, x2.grad)


def test_scalar_and_empty_inputs(launcher):
    x = torch.tensor(1.5, requires_grad=True)
    y = liger_relu_squared(x)
    assert y.shape == () and float(y.detach()) == 2.25
    y.backward()
    assert float(x.grad) == 3.0
    e = torch.empty(0, 7, requires_grad=True)
    ye = liger_relu_squared(e)
    assert ye.shape == (0, 7)
    ye.sum().backward()
    assert e.grad.shape == (0, 7)
    assert [c[0] for c in launcher.calls] == ["relu_squared_fwd", "relu_squared_bwd"]


def test_opcheck(launcher):
    x = torch.randn(5, 12)
    dy = torch.randn(5, 12)
    torch.library.opcheck(torch.ops.ligerd.relu_squared_fwd.default, (x.requires_grad_(),))
    torch.library.opcheck(torch.ops.ligerd.relu_squared_bwd.default, (dy, x.detach()))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph(launcher, backend):
    """Nemotron's MLP shape: down(relu2(up(x)))."""

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = torch.nn.Linear(16, 24)
            self.down = torch.nn.Linear(24, 16)
            self.act = LigerReLUSquared()

        def forward(self, x):
            return self.down(self.act(self.up(x)))

    assert_compiled_grads_match(MLP, lambda m: m.up.weight, launcher, backend,
                                ["relu_squared_fwd", "relu_squared_bwd"])


# --- input errors (no launcher: the real path, and the launcher never called) ------------------

def test_cpu_tensor_rejected():
    with pytest.raises(ligerd.OpInputError, match="relu_squared.*CUDA tensor"):
        liger_relu_squared(torch.randn(2, 4))


@pytest.mark.parametrize("bad,match", [
    (lambda: torch.randn(2, 4, dtype=torch.float64), "dtype torch.float64"),
    (lambda: torch.randint(0, 4, (2, 4)), "dtype torch.int64"),
    (lambda: [1.0, 2.0], "torch.Tensor"),
])
def test_bad_inputs_named(launcher, bad, match):
    with pytest.raises(ligerd.OpInputError, match=match) as ei:
        liger_relu_squared(bad())
    assert "relu_squared" in str(ei.value) and ei.value.op == "relu_squared"
    with pytest.raises(ligerd.OpInputError):
        LigerReLUSquared()(bad())
    assert not launcher.calls


def test_ops_module_exports():
    assert relu2_ops.relu_squared_fwd.name == "relu_squared_fwd"
    assert relu2_ops.relu_squared_bwd.name == "relu_squared_bwd"
    assert torch.ops.ligerd.relu_squared_fwd.default is relu2_ops.relu_squared_fwd.overload
    from ligerd import transformers
    from ligerd.transformers import functional
    assert "LigerReLUSquared" in transformers.__all__ and "liger_relu_squared" in transformers.__all__
    assert "liger_relu_squared" in functional.__all__ and "LigerReLUSquaredFunction" in functional.__all__
