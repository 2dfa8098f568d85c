"""RMSNorm benchmark rows: forward, backward and forward+backward ("full"), bf16, for
torch eager (Hugging Face LlamaRMSNorm math), torch.compile of the same, Liger-Kernel's
LigerRMSNorm (if importable) and ligerd's LigerRMSNorm (local dispatch).

Byte model (minimal traffic, what a fused kernel must move): fwd reads X and writes Y = 2*M*N*b;
bwd reads dY and X and writes dX = 3*M*N*b; full = 5*M*N*b (weight, rstd and dW are O(N + M)).
"""

from __future__ import annotations

import contextlib
import gc
from typing import Callable, Dict, List, Optional

import torch

import common

OP = "rms_norm"
PASSES = ("fwd", "bwd", "full")
BYTES_FACTOR = {"fwd": 2, "bwd": 3, "full": 5}
EPS = 1e-6
DEVICE = "cuda"  # tests of the harness itself set "cpu"


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


def _liger_cls():
    try:
        from liger_kernel.transformers import LigerRMSNorm
        return LigerRMSNorm
    except Exception as e:  # noqa: BLE001
        return e


def _ligerd_cls():
    try:
        from ligerd.transformers import LigerRMSNorm
        return LigerRMSNorm
    except Exception as e:  # noqa: BLE001
        return e


def make_impls(selected: Optional[List[str]] = None) -> Dict[str, Callable[[int], torch.nn.Module]]:
    """name -> factory(hidden) -> module (bf16, on cuda). Unavailable peers are reported, skipped."""
    impls: Dict[str, Callable[[int], torch.nn.Module]] = {}
    impls["eager"] = lambda n: HFLlamaRMSNorm(n)

    def compiled(n):
        m = HFLlamaRMSNorm(n)
        # The rows dimension is marked dynamic on the inputs (see run/_time_pass): one inference
        # and one training graph per hidden size, specialised on N as a fused kernel is, reused
        # across M. (Static shapes would mean 18 compiles, a minute more, for the same kernels.)
        m.forward = torch.compile(m.forward, fullgraph=True)
        m._bench_dynamic_rows = True
        return m

    # The "bwd" pass runs one graph's backward repeatedly (retain_graph=True), which AOTAutograd's
    # donated buffers forbid; turning donation off changes the backward's allocations, not its
    # kernels or their traffic.
    import torch._functorch.config as functorch_config
    if hasattr(functorch_config, "donated_buffer"):
        functorch_config.donated_buffer = False
    # One code object (HFLlamaRMSNorm.forward) is compiled for several modules, hidden sizes
    # and grad modes; do not let Dynamo's per-code recompile limit silently fall back to eager.
    import torch._dynamo.config as dynamo_config
    for knob in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                 "accumulated_cache_size_limit"):
        if hasattr(dynamo_config, knob):
            setattr(dynamo_config, knob, 256)

    impls["torch.compile"] = compiled
    liger = _liger_cls()
    if isinstance(liger, Exception):
        print(f"[bench] Liger-Kernel not importable, skipped: {liger}")
    else:
        # Liger's defaults (casting_mode llama, in_place True), as a user would get them.
        impls["liger"] = lambda n: liger(n, eps=EPS)
    ours = _ligerd_cls()
    if isinstance(ours, Exception):
        print(f"[bench] ligerd not importable, skipped: {ours}")
    else:
        impls["ligerd"] = lambda n: ours(n, eps=EPS)
    if selected:
        impls = {k: v for k, v in impls.items() if k in selected}
    return impls


class _Set:
    """One copy of a step's buffers: x, a leaf xg (requires grad) and dy."""

    def __init__(self, m_rows, n, dtype):
        self.x = torch.randn(m_rows, n, device=DEVICE, dtype=dtype)
        self.xg = self.x.clone().requires_grad_()
        self.dy = torch.randn(m_rows, n, device=DEVICE, dtype=dtype)
        self.y = None  # the retained forward of the "bwd" pass


def _steps(p, module, sets):
    """One step function per buffer copy for pass ``p``; nothing else happens per iteration.

    fwd:  module(x) under no_grad.
    bwd:  torch.autograd.grad over a forward run once beforehand (retain_graph=True). With
          Liger's and ligerd's default in_place=True, dX overwrites dY: values drift from
          repetition to repetition, the traffic does not.
    full: module(xg) then torch.autograd.grad. Gradients are returned, not accumulated into
          .grad, so no step adds a gradient-accumulation kernel and nothing is reset between
          steps (a training step with zero_grad(set_to_none=True) does the same work)."""
    params = [q for q in module.parameters() if q.requires_grad]
    dynamic = getattr(module, "_bench_dynamic_rows", False)
    for st in sets:
        if dynamic:
            torch._dynamo.mark_dynamic(st.x, 0)
            torch._dynamo.mark_dynamic(st.xg, 0)

    def fwd(st):
        def step():
            with torch.no_grad():
                module(st.x)
        return step

    def bwd(st):
        inputs = [st.xg] + params
        return lambda: torch.autograd.grad(st.y, inputs, st.dy, retain_graph=True)

    def full(st):
        inputs = [st.xg] + params
        return lambda: torch.autograd.grad(module(st.xg), inputs, st.dy)

    if p == "bwd":
        # Backward ops run on their forward's stream: the forward runs on the stream the steps
        # are timed and captured on.
        ctx = torch.cuda.stream(common.bench_stream()) if DEVICE == "cuda" else contextlib.nullcontext()
        with ctx:
            for st in sets:
                st.y = module(st.xg)
    return [{"fwd": fwd, "bwd": bwd, "full": full}[p](st) for st in sets]


def _release(sets):
    for st in sets:
        st.y = None


def run(M_list, N_list, impls, dtype=torch.bfloat16, passes=PASSES, log=print,
        eager_launch=True) -> List[dict]:
    """One row per (impl, M, N, pass): ms (CUDA-graph replay, or the eager-launch time where
    capture failed: see ``method`` and ``note``), GB/s by the byte model, ms_eager_launch and
    host_us (see bench/common.py)."""
    rows = []
    b = torch.tensor([], dtype=dtype).element_size()
    for n in N_list:
        for name, factory in impls.items():
            module = factory(n).to(DEVICE, dtype)
            for m_rows in M_list:
                for p in passes:
                    step_bytes = BYTES_FACTOR[p] * m_rows * n * b
                    k = common.rotation(step_bytes)
                    row = {"op": OP, "impl": name, "M": m_rows, "N": n, "pass": p, "copies": k}
                    sets = [_Set(m_rows, n, dtype) for _ in range(k)]
                    try:
                        steps = _steps(p, module, sets)
                        if eager_launch:
                            row["ms_eager_launch"], row["host_us"] = common.eager_ms(steps)
                        try:
                            row["ms"], _ = common.graph_ms(steps)
                            row["method"] = "cuda-graph"
                        except Exception as e:  # noqa: BLE001
                            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]
                            log(f"[bench] {name} {p} {m_rows}x{n}: graph capture failed ({msg}); "
                                f"eager-launch time used")
                            if DEVICE == "cuda":
                                torch.cuda.synchronize()
                            if "ms_eager_launch" not in row:
                                row["ms_eager_launch"], row["host_us"] = common.eager_ms(steps)
                            row["ms"] = row["ms_eager_launch"]
                            row["method"] = "eager-events"
                            row["note"] = f"graph capture failed: {msg}"
                    except Exception as e:  # noqa: BLE001
                        log(f"[bench] {name} {p} {m_rows}x{n}: FAILED: {type(e).__name__}: {e}")
                        row.update(ms=float("nan"), method="failed",
                                   note=f"{type(e).__name__}: {e}"[:160])
                    row["GBps"] = step_bytes / (row["ms"] * 1e-3) / 1e9
                    if row.get("ms_eager_launch"):
                        row["GBps_eager_launch"] = step_bytes / (row["ms_eager_launch"] * 1e-3) / 1e9
                    rows.append(row)
                    log(f"[bench] {OP} {name:>13} {p:>4} M={m_rows:>6} N={n:>5}: {row['ms']:8.4f} ms "
                        f"{row['GBps']:7.0f} GB/s [{row.get('method')}, x{k}]; eager launch "
                        f"{row.get('ms_eager_launch', float('nan')):8.4f} ms, host "
                        f"{row.get('host_us', float('nan')):6.1f} us/step")
                    _release(sets)
                    steps = sets = None  # noqa: F841
                gc.collect()
                if DEVICE == "cuda":
                    torch.cuda.empty_cache()
            del module
    return rows


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
        module = factory(n).to("cuda", dtype)
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
