#!/usr/bin/env python3
"""Host cost of one forward + backward through ligerd's Python path, with the executor replaced
by a no-op (so only Python/autograd/dispatch work is timed): the eager path (what an eager training
step runs: ligerd.ops._opdef's plain autograd.Function), the torch.library custom-op path (what
torch.compile and tracers use, here forced in eager mode), the same launches in a hand-written
torch.autograd.Function, and the cheapest autograd op pair (x * w) as the floor.

    PYTHONPATH=python_client python3 bench/host/custom_op_overhead.py [--calls 2000] [--rounds 7]

Why: the training demo (a 104M-parameter LLaMA, 32 ms steps) ran at 0.81x HF eager's tokens/s
while the 1B end-to-end run (~140 ms steps) was 1.3-1.4x faster; the per-op host cost is the
suspect. Every row goes through the production ``_backend.launch`` (local dispatch, the extension
replaced by a no-op object), not the tests' launcher hook. Runs anywhere (CPU tensors; no GPU, no
daemon). Each row is timed in ``--rounds`` interleaved rounds of ``--calls`` calls; the minimum
round is the figure to compare (least disturbed by other processes), the median is printed too."""

from __future__ import annotations

import argparse
import os
import statistics
import time
import types

import torch

import ligerd
from ligerd import _backend
from ligerd.ops import _opdef
from ligerd.transformers import LigerRMSNorm
from ligerd.transformers.functional import liger_swiglu


class PlainRmsNorm(torch.autograd.Function):
    """The same executor calls as ligerd.ops.rms_norm, hand-written, no checks."""

    @staticmethod
    def forward(ctx, x, w, eps):
        y = torch.empty_like(x)
        rstd = torch.empty(x.shape[0], dtype=torch.float32)
        _backend.call("rms_norm_fwd", X=x, W=w, Y=y, RSTD=rstd, eps=eps, offset=0.0, casting_mode=0)
        ctx.save_for_backward(x, w, rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, rstd = ctx.saved_tensors
        dw = torch.empty_like(w)
        _backend.call("rms_norm_bwd", dY=dy, X=x, W=w, RSTD=rstd, dX=dy, dW=dw, offset=0.0, casting_mode=0)
        return dy, dw, None


class forced_custom_ops:
    """Makes ligerd.ops._opdef.eager() False (as under a tracer) for the block: every ligerd op
    then goes through its registered torch.library op, as every call did before the eager path."""

    def __enter__(self):
        self.saved = _opdef._dispatch_mode_count
        _opdef._dispatch_mode_count = lambda: 1

    def __exit__(self, *exc):
        _opdef._dispatch_mode_count = self.saved


def forced(fn):
    def run():
        with forced_custom_ops():
            return fn()
    return run


def install_noop_executor() -> None:
    os.environ["LIGERD_NO_DAEMON"] = "1"
    _backend._C = types.SimpleNamespace(launch=lambda op, tensors, scalars: None)
    _backend.cpu_allowed = lambda: True  # the ops' checks accept CPU tensors
    ligerd.set_dispatch_mode("local")


def time_rows(rows: dict, calls: int, rounds: int) -> dict:
    for fn in rows.values():  # warm-up
        for _ in range(100):
            fn()
    samples = {name: [] for name in rows}
    for _ in range(rounds):
        for name, fn in rows.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - t0) / calls * 1e6)
    return samples


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    install_noop_executor()
    torch.manual_seed(0)
    m = LigerRMSNorm(4096)
    w = m.weight
    x = torch.randn(4, 4096, requires_grad=True)
    dy = torch.randn(4, 4096)
    a0, b0 = torch.randn(4, 4096, requires_grad=True), torch.randn(4, 4096, requires_grad=True)

    def swiglu_step():
        a, b = a0 * 1.0, b0 * 1.0  # SwiGLU writes its gradients over its inputs: fresh ones
        return torch.autograd.grad(liger_swiglu(a, b), [a0, b0], dy)

    def rms_step():
        return torch.autograd.grad(m(x), [x, w], dy)

    rows = {
        "RMSNorm: ligerd eager path": rms_step,
        "RMSNorm: ligerd custom-op path": forced(rms_step),
        "RMSNorm: hand-written autograd.Function": lambda: torch.autograd.grad(
            PlainRmsNorm.apply(x, w, 1e-6), [x, w], dy),
        "floor: x * w": lambda: torch.autograd.grad(x * w, [x, w], dy),
        "SwiGLU: ligerd eager path": swiglu_step,
        "SwiGLU: ligerd custom-op path": forced(swiglu_step),
        "floor: a * 1, b * 1, a * b": lambda: torch.autograd.grad((a0 * 1.0) * (b0 * 1.0), [a0, b0], dy),
    }
    samples = time_rows(rows, args.calls, args.rounds)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; us per forward + backward "
          f"({args.rounds} rounds of {args.calls} calls)")
    print(f"{'':42s} {'min':>8s} {'median':>8s}")
    for name, s in samples.items():
        print(f"{name:42s} {min(s):8.1f} {statistics.median(s):8.1f}")


if __name__ == "__main__":
    main()
