"""The kernel-benchmark harness on the CPU: every op module's shapes, byte model and eager steps
(fwd, bwd, full) run and produce gradients of the right shapes; ratios and the summary come out
of fake rows right. (Timing itself needs CUDA: bench/run_kernels.py on the GPU machine.)"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from ligerd.testing import by_path

torch = pytest.importorskip("torch", reason="torch is not installed")

BENCH = Path(__file__).resolve().parents[2] / "bench"




by_path.load_bench(BENCH.parent)
harness = importlib.import_module("ligerd_bench.harness")
run_kernels = by_path.load("run_kernels", BENCH / "run_kernels.py")

TINY = {"rms_norm": {"M": 3, "N": 8}, "fused_add_rms_norm": {"M": 3, "N": 8},
        "layer_norm": {"M": 3, "N": 8}, "swiglu": {"M": 3, "F": 8}, "geglu": {"M": 3, "F": 8},
        "rope": {"B": 2, "S": 3, "Hq": 4, "Hk": 2, "D": 8}, "cross_entropy": {"M": 3, "V": 11},
        "rope_partial": {"B": 2, "S": 3, "Hq": 4, "Hk": 2, "D": 8, "R": 4},
        "softmax": {"M": 3, "N": 8}, "kl_div": {"M": 3, "V": 11}, "jsd": {"M": 3, "V": 11},
        "tvd": {"M": 3, "V": 11}, "relu_squared": {"M": 3, "N": 9},
        "clamped_glu": {"M": 3, "N": 10, "pairs": 1}, "rope_vision": {"S": 5, "H": 2, "D": 8},
        "ce_slice": {"M": 3, "N": 8}}


@pytest.fixture(autouse=True)
def cpu_harness(monkeypatch):
    monkeypatch.setattr(harness, "DEVICE", "cpu")


@pytest.mark.parametrize("name", sorted(TINY))
def test_module_interface_and_eager_steps(name):
    mod = importlib.import_module(f"ligerd_bench.{name}")
    assert mod.OP == name and mod.TITLE and set(mod.PASSES) <= {"fwd", "bwd", "full"}
    full = mod.shapes(False)
    assert mod.shapes(True) == full[:1], "quick runs the first (LLaMA-3-8B) shape alone"
    shape = TINY[name]
    # A step's full pass moves at most its two halves' bytes (less where the forward already
    # computes the gradient, as cross-entropy's does) and at least either half's.
    fwd, bwd, full = (mod.bytes_moved(shape, p, 2) for p in ("fwd", "bwd", "full"))
    assert max(fwd, bwd) <= full <= fwd + bwd
    fn = mod.impls()["eager"](shape, torch.float32)
    for p in mod.PASSES:
        args, grad_idx = harness._fresh_args(mod, shape, torch.float32)
        out = harness._step(mod, fn, args, grad_idx, p)()
        if p == "fwd":  # outputs (a module's own step may return nothing: an in-place op)
            outs = [o for o in (out if isinstance(out, (tuple, list)) else [out]) if o is not None]
            assert all(torch.isfinite(o).all() for o in outs)
        else:
            grads = list(out)
            assert [g.shape for g in grads[:len(grad_idx)]] == [args[i].shape for i in grad_idx]
            assert all(torch.isfinite(g).all() for g in grads)


def test_norm_baselines_compute_the_ops():
    fa = importlib.import_module("ligerd_bench.fused_add_rms_norm")
    x, r = torch.randn(3, 8), torch.randn(3, 8)
    y, s = fa.HFAddRMSNorm(8)(x, r)
    assert torch.equal(s, x + r)
    torch.testing.assert_close(y, s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + fa.EPS))
    ln = importlib.import_module("ligerd_bench.layer_norm")
    m = ln.impls()["eager"]({"M": 3, "N": 8}, torch.float32)
    assert isinstance(m, torch.nn.LayerNorm) and torch.count_nonzero(m.bias) > 0
    for name in ("rms_norm", "fused_add_rms_norm", "layer_norm"):
        full = importlib.import_module(f"ligerd_bench.{name}").shapes(False)
        assert full[0] == {"M": 16384, "N": 4096}, "LLaMA-3-8B first"


def test_ratios_and_summary():
    rows = [
        {"op": "x", "impl": "eager", "shape": "M=1", "pass": "fwd", "ms": 2.0, "GBps": 100.0,
         "peak_extra_MiB": 10.0},
        {"op": "x", "impl": "ligerd", "shape": "M=1", "pass": "fwd", "ms": 1.0, "GBps": 200.0,
         "peak_extra_MiB": 4.0},
    ]
    run_kernels.add_ratios(rows, copy_gbps=400.0)
    assert rows[1]["speedup_vs_eager"] == pytest.approx(2.0)
    assert rows[0]["speedup_vs_ligerd"] == pytest.approx(0.5)
    assert rows[1]["pct_copy_bw"] == pytest.approx(50.0)
    (line,) = run_kernels.summary(rows)
    assert line["x_vs_eager"] == pytest.approx(2.0)
    assert line["peak_MiB"] == 4.0 and line["peak_MiB_eager"] == 10.0
