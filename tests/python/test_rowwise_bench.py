"""bench/kernels/layer_norm.py and fused_add_rms_norm.py on the CPU: the harness interface, byte
models, and the eager baselines' steps (fwd, bwd, full) giving gradients of the right shapes that
match the ops' math. (Timing needs CUDA: bench/run_kernels.py on the GPU machine.)"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
harness = importlib.import_module("kernels.harness")

TINY = {"layer_norm": {"M": 3, "N": 8}, "fused_add_rms_norm": {"M": 3, "N": 8}}


@pytest.fixture(autouse=True)
def cpu_harness(monkeypatch):
    monkeypatch.setattr(harness, "DEVICE", "cpu")


@pytest.mark.parametrize("name", sorted(TINY))
def test_module_interface_and_eager_steps(name):
    mod = importlib.import_module(f"kernels.{name}")
    assert mod.OP == name and mod.TITLE and set(mod.PASSES) == {"fwd", "bwd", "full"}
    full = mod.shapes(False)
    assert full[0] == {"M": 16384, "N": 4096}, "LLaMA-3-8B first"
    assert {s["N"] for s in full} == {2048, 4096, 8192}
    assert mod.shapes(True) == full[:1]
    shape = TINY[name]
    assert mod.bytes_moved(shape, "full", 2) == mod.bytes_moved(shape, "fwd", 2) + mod.bytes_moved(shape, "bwd", 2)
    per = 2 if name == "layer_norm" else 4
    assert mod.bytes_moved(shape, "fwd", 2) == per * 3 * 8 * 2
    impls = mod.impls()
    assert {"eager", "torch.compile"} <= set(impls)
    fn = impls["eager"](shape, torch.float32)
    for p in mod.PASSES:
        args, grad_idx = harness._fresh_args(mod, shape, torch.float32)
        out = harness._step(mod, fn, args, grad_idx, p)()
        if p == "fwd":
            outs = out if isinstance(out, tuple) else (out,)
            assert all(o.shape == args[0].shape for o in outs)
        else:
            grads = list(out)
            assert [g.shape for g in grads[:len(grad_idx)]] == [args[i].shape for i in grad_idx]
            assert all(torch.isfinite(g).all() for g in grads)


def test_eager_baselines_compute_the_ops():
    fa = importlib.import_module("kernels.fused_add_rms_norm")
    x, r = torch.randn(3, 8), torch.randn(3, 8)
    y, s = fa.HFAddRMSNorm(8)(x, r)
    assert torch.equal(s, x + r)
    torch.testing.assert_close(y, s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + fa.EPS))
    ln = importlib.import_module("kernels.layer_norm")
    m = ln.impls()["eager"]({"M": 3, "N": 8}, torch.float32)
    assert isinstance(m, torch.nn.LayerNorm) and torch.count_nonzero(m.bias) > 0
