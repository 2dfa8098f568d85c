"""RMSNorm benchmark rows: forward, backward and forward+backward ("full"), bf16, for
torch eager (Hugging Face LlamaRMSNorm math), torch.compile of the same, Liger-Kernel's
LigerRMSNorm (if importable) and ligerd's LigerRMSNorm. Run by bench/run_kernels.py through
bench/ligerd_bench/harness.py; call_overhead() adds the per-call host cost rows.

Byte model (minimal traffic, what a fused kernel must move): fwd reads X and writes Y = 2*M*N*b;
bwd reads dY and X and writes dX = 3*M*N*b; full = 5*M*N*b (weight, rstd and dW are O(N + M)).
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch

from ligerd_bench import harness

OP = "rms_norm"
TITLE = "RMSNorm"
PASSES = ("fwd", "bwd", "full")
BYTES_FACTOR = {"fwd": 2, "bwd": 3, "full": 5}
EPS = 1e-6


class HFLlamaRMSNorm(torch.nn.Module):
    """The eager baseline: Hugging Face's LlamaRMSNorm forward, written out."""

    def __init__(self, hidden_size, eps=EPS):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        h = hidden_states.to(torch.float32)
        variance = h.pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * h.to(input_dtype)


def shapes(quick: bool) -> List[dict]:
    """LLaMA-3-8B's (16K tokens x hidden 4096) first, then 4K/16K/64K rows x 2048/4096/8192."""
    first = {"M": 16384, "N": 4096}
    if quick:
        return [first]
    grid = [{"M": m, "N": n} for n in (2048, 4096, 8192) for m in (4096, 16384, 65536)]
    return [first] + [s for s in grid if s != first]


def bytes_moved(shape: dict, p: str, elem_bytes: int) -> int:
    return BYTES_FACTOR[p] * shape["M"] * shape["N"] * elem_bytes


def make_args(shape: dict, dtype):
    return [torch.randn(shape["M"], shape["N"], device=harness.DEVICE, dtype=dtype)], [0]


def impls() -> Dict[str, Callable[[dict, torch.dtype], torch.nn.Module]]:
    """name -> factory(shape, dtype) -> module. Unavailable peers are reported and skipped."""
    out: Dict[str, Callable] = {
        "eager": lambda s, d: HFLlamaRMSNorm(s["N"]),
        "torch.compile": lambda s, d: harness.compiled(HFLlamaRMSNorm(s["N"])),
    }
    # Both with Liger's defaults (casting_mode llama, in_place True), as a user would get them.
    return harness.add_peers(out, "LigerRMSNorm", lambda cls, s, d: cls(s["N"], eps=EPS))


def call_overhead(impls, n=4096, rows=4, calls=1000, dtype=torch.bfloat16, log=print) -> List[dict]:
    """Host cost of one call: a tiny input (the GPU work is a few microseconds), many calls back
    to back, wall time per call. Measures the Python/dispatch path, not the kernels (the issue's
    target: ligerd's call costs no more than a Liger/Triton launch).

    Columns (us per call): torch_op_us, one tiny torch op (x.add_(1)), the host's speed floor;
    fwd_us_per_call, forward under no_grad; fwd_grad_us, forward recording autograd (the graph is
    dropped); full_us_per_call, forward + .backward(dy) accumulating into .grad (what a training
    step does; the previous harness's number); full_grad_us, forward + torch.autograd.grad.
    ligerd also: *_python_only_us, the same with the executor replaced by a no-op (Python custom
    op, checks and allocations only); the executor's share is the difference."""
    import time

    def per_call(fn, ctx):
        with ctx():
            for _ in range(20):
                fn()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            torch.cuda.synchronize()
            return (time.perf_counter() - t0) / calls * 1e6

    t = torch.zeros(rows, n, device="cuda", dtype=dtype)
    torch_op_us = per_call(lambda: t.add_(1.0), torch.no_grad)
    out = []
    for name, factory in impls.items():
        if name == "torch.compile":
            continue  # its per-call cost is the compiled graph's guard + launch, not comparable here
        module = factory({"M": rows, "N": n}, dtype).to("cuda", dtype)
        params = [q for q in module.parameters() if q.requires_grad]
        x = torch.randn(rows, n, device="cuda", dtype=dtype)
        xg = x.clone().requires_grad_()
        dy = torch.randn(rows, n, device="cuda", dtype=dtype)
        cases = {
            "fwd_us_per_call": (lambda: module(x), torch.no_grad),
            "fwd_grad_us": (lambda: module(xg), torch.enable_grad),
            "full_us_per_call": (lambda: module(xg).backward(dy), torch.enable_grad),
            "full_grad_us": (lambda: torch.autograd.grad(module(xg), [xg] + params, dy),
                             torch.enable_grad),
        }
        row = {"op": OP, "impl": name, "M": rows, "N": n, "torch_op_us": torch_op_us}
        for col, (fn, ctx) in cases.items():
            row[col] = per_call(fn, ctx)
            xg.grad = None
            for q in params:
                q.grad = None
        if name == "ligerd":
            try:
                from ligerd import _backend
                saved = _backend._test_launcher
                _backend._test_launcher = lambda op, tensors, scalars: None
                try:
                    row["fwd_python_only_us"] = per_call(*cases["fwd_us_per_call"])
                    row["full_python_only_us"] = per_call(*cases["full_grad_us"])
                finally:
                    _backend._test_launcher = saved
            except Exception as e:  # noqa: BLE001
                log(f"[bench] ligerd python-only timing skipped: {e}")
        log(f"[bench] call overhead {name:>8}: " +
            ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k.endswith("_us") or k.endswith("_call")))
        out.append(row)
        del module
    return out


OVERHEAD_COLUMNS = ["op", "impl", "M", "N", "torch_op_us", "fwd_us_per_call", "fwd_grad_us",
                    "full_us_per_call", "full_grad_us", "fwd_python_only_us", "full_python_only_us"]
