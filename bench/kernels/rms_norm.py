"""RMSNorm benchmark rows: forward, backward and forward+backward ("full"), bf16, for
torch eager (Hugging Face LlamaRMSNorm math), torch.compile of the same, Liger-Kernel's
LigerRMSNorm (if importable) and ligerd's LigerRMSNorm (local dispatch).

Byte model (minimal traffic, what a fused kernel must move): fwd reads X and writes Y = 2*M*N*b;
bwd reads dY and X and writes dX = 3*M*N*b; full = 5*M*N*b (weight, rstd and dW are O(N + M)).
"""

from __future__ import annotations

import gc
from typing import Callable, Dict, List, Optional

import torch

OP = "rms_norm"
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


def _inputs(m_rows, n, dtype):
    x = torch.randn(m_rows, n, device="cuda", dtype=dtype)
    dy = torch.randn(m_rows, n, device="cuda", dtype=dtype)
    return x, dy


def run(M_list, N_list, impls, bench_ms, dtype=torch.bfloat16, passes=PASSES, log=print) -> List[dict]:
    """One row per (impl, M, N, pass): ms and GB/s by the byte model."""
    rows = []
    b = torch.tensor([], dtype=dtype).element_size()
    for n in N_list:
        for name, factory in impls.items():
            module = factory(n).to("cuda", dtype)
            for m_rows in M_list:
                x, dy = _inputs(m_rows, n, dtype)
                for p in passes:
                    try:
                        ms = _time_pass(p, module, x, dy, bench_ms)
                    except Exception as e:  # noqa: BLE001
                        log(f"[bench] {name} {p} {m_rows}x{n}: FAILED: {type(e).__name__}: {e}")
                        ms = float("nan")
                    gbps = BYTES_FACTOR[p] * m_rows * n * b / (ms * 1e-3) / 1e9
                    rows.append({"op": OP, "impl": name, "M": m_rows, "N": n, "pass": p,
                                 "ms": ms, "GBps": gbps})
                    log(f"[bench] {OP} {name:>13} {p:>4} M={m_rows:>6} N={n:>5}: {ms:8.4f} ms "
                        f"{gbps:7.0f} GB/s")
                del x, dy
                gc.collect()
                torch.cuda.empty_cache()
            del module
    return rows


def _time_pass(p, module, x, dy, bench_ms):
    params = [q for q in module.parameters()]
    dynamic = getattr(module, "_bench_dynamic_rows", False)
    if p == "fwd":
        if dynamic:
            torch._dynamo.mark_dynamic(x, 0)
        with torch.no_grad():
            return bench_ms(lambda: module(x))
    xg = x.detach().clone().requires_grad_()
    if dynamic:
        torch._dynamo.mark_dynamic(xg, 0)
    grads = [xg] + params
    if p == "bwd":
        y = module(xg)
        # retain_graph: the same graph is run backward every repetition. With Liger's and
        # ligerd's default in_place=True, dX overwrites dY's buffer: the values drift from
        # repetition to repetition, the traffic does not.
        g = dy.clone()
        ms = bench_ms(lambda: y.backward(g, retain_graph=True), grad_to_none=grads)
        del y
        return ms
    g = dy.clone()
    return bench_ms(lambda: module(xg).backward(g), grad_to_none=grads)


def call_overhead(impls, n=4096, rows=4, calls=2000, dtype=torch.bfloat16, log=print) -> List[dict]:
    """Host cost of one call: a tiny input (the GPU work is a few microseconds), many calls
    back to back, wall time per call. Measures the Python/dispatch path, not the kernels
    (the issue's target: ligerd's call costs no more than a Liger/Triton launch)."""
    import time
    out = []
    for name, factory in impls.items():
        if name == "torch.compile":
            continue  # its per-call cost is the compiled graph's guard + launch, not comparable here
        module = factory(n).to("cuda", dtype)
        x = torch.randn(rows, n, device="cuda", dtype=dtype)
        xg = x.clone().requires_grad_()
        dy = torch.randn(rows, n, device="cuda", dtype=dtype)
        row = {"op": OP, "impl": name, "M": rows, "N": n}
        for label, fn in (("fwd", lambda: module(x)), ("full", lambda: module(xg).backward(dy))):
            ctx = torch.no_grad() if label == "fwd" else torch.enable_grad()
            with ctx:
                for _ in range(50):
                    fn()
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                torch.cuda.synchronize()
                row[f"{label}_us_per_call"] = (time.perf_counter() - t0) / calls * 1e6
            xg.grad = None
        log(f"[bench] call overhead {name:>8}: fwd {row['fwd_us_per_call']:.1f} us, "
            f"fwd+bwd {row['full_us_per_call']:.1f} us per call")
        out.append(row)
        del module
    return out
