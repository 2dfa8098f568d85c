"""torch.compile(fullgraph) of a small module around one ligerd op against the same module eager,
for the CPU wiring tests (tests/python/test_<op>_wiring.py) on the float64 reference executor."""

from __future__ import annotations

from typing import Callable, Sequence

import torch


def assert_compiled_grads_match(make_module: Callable[[], torch.nn.Module], weight: Callable, launcher,
                                backend: str, ops: Sequence[str], hidden: int = 16) -> None:
    """``make_module()`` (built after torch.manual_seed(0)) on a [2, 7, hidden] input with a random
    output gradient, eager and then compiled (fullgraph, ``backend``): the input's and
    ``weight(module)``'s gradients equal (torch.testing.assert_close's defaults), and the compiled
    run launches exactly ``ops`` (the reference launcher's record), i.e. the op stayed in the
    graph as one forward and one backward call."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = make_module()
    x = torch.randn(2, 7, hidden, requires_grad=True)
    dy = torch.randn(2, 7, hidden)
    m(x).backward(dy)
    g_eager = (x.grad.clone(), weight(m).grad.clone())
    x.grad = None
    m.zero_grad()
    launcher.calls.clear()
    y = torch.compile(m, fullgraph=True, backend=backend)(x)
    y.backward(dy)
    torch.testing.assert_close(x.grad, g_eager[0])
    torch.testing.assert_close(weight(m).grad, g_eager[1])
    assert [c[0] for c in launcher.calls] == list(ops)


__all__ = ["assert_compiled_grads_match"]
