"""The generic kernel-benchmark loop: one op module (bench/ligerd_bench/<op>.py) at each of its shapes,
for each implementation and pass, timed alike (bench/ligerd_bench/common.py), one CSV row each.

An op module defines (see bench/ligerd_bench/rms_norm.py for a complete one):

    OP = "rms_norm"                  # the CSV's op column
    TITLE = "RMSNorm"                # plot title
    PASSES = ("fwd", "bwd", "full")  # the passes that apply
    def shapes(quick) -> [dict]      # e.g. {"M": 16384, "N": 4096}; the LLaMA-3-8B shape first
    def bytes_moved(shape, p, elem_bytes) -> int   # the minimal byte model of pass p
    def impls() -> {name: factory}   # factory(shape, dtype) -> fn(*args) -> Tensor | tuple
    def make_args(shape, dtype) -> (args, grad_idx)  # fresh inputs; indices of differentiable ones
    # optional, where the generic steps below don't fit (in-place ops, losses that compute the
    # gradient in the forward):
    def make_steps(fn, args, grad_idx, p) -> step   # one step of pass p on one copy of the args

Generic steps on one copy of the args:
    fwd   fn(*args) under no_grad
    bwd   torch.autograd.grad over one forward run beforehand (retain_graph=True): the
          differentiable args and fn's parameters, random grad_outputs (ones for scalars)
    full  the forward, then torch.autograd.grad. Gradients are returned, not accumulated into
          .grad, so no step adds an accumulation kernel (as zero_grad(set_to_none=True) would).
Peak memory (pass "full", one step, fresh copy): torch.cuda.max_memory_allocated above what was
allocated before the step (args, parameters and the retained nothing), in MiB: what the op adds
to a training step's high-water mark, gradients of the inputs included.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Callable, Dict, List, Sequence

import torch

from ligerd_bench import common

PEERS = ("eager", "torch.compile", "liger", "ligerd")
DEVICE = "cuda"  # harness self-tests set "cpu"


def configure_compile() -> None:
    """torch.compile settings every op module shares.

    - The "bwd" pass runs one graph's backward repeatedly (retain_graph=True), which AOTAutograd's
      donated buffers forbid; turning donation off changes the backward's allocations, not its
      kernels or their traffic.
    - One code object is compiled for several shapes and grad modes: do not let Dynamo's
      per-code recompile limit silently fall back to eager."""
    import torch._dynamo.config as dynamo_config
    import torch._functorch.config as functorch_config
    if hasattr(functorch_config, "donated_buffer"):
        functorch_config.donated_buffer = False
    for knob in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                 "accumulated_cache_size_limit"):
        if hasattr(dynamo_config, knob):
            setattr(dynamo_config, knob, 256)


def compiled(fn: Callable) -> Callable:
    """torch.compile(fn, fullgraph=True) for modules and plain functions alike."""
    configure_compile()
    if isinstance(fn, torch.nn.Module):
        fn.forward = torch.compile(fn.forward, fullgraph=True)
        return fn
    return torch.compile(fn, fullgraph=True)


def peer_class(module: str, name: str):
    """``from module import name``, or the exception that import raised (a peer that does not
    import becomes a row saying so, never a crash of the benchmark)."""
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except Exception as e:  # noqa: BLE001
        return e


PEER_MODULES = {"liger": ("liger_kernel.transformers", "Liger-Kernel"), "ligerd": ("ligerd.transformers", "ligerd")}


def add_peers(out: Dict[str, Callable], name: str, make: Callable, order=("liger", "ligerd")) -> Dict[str, Callable]:
    """Adds the peers' factories to an op module's impls: ``out[peer] = factory(shape, dtype) ->
    make(cls, shape, dtype)``, cls the peer's class ``name`` (Liger-Kernel's from
    liger_kernel.transformers, ligerd's from ligerd.transformers), in ``order``. A peer whose
    class does not import is reported and skipped. Returns ``out``."""
    for peer in order:
        module, who = PEER_MODULES[peer]
        cls = peer_class(module, name)
        if isinstance(cls, Exception):
            print(f"[bench] {who} not importable, skipped: {cls}")
        else:
            out[peer] = lambda s, d, cls=cls: make(cls, s, d)
    return out


def function_impls(reference: Callable, peers: Dict[str, str]) -> Dict[str, Callable]:
    """The impls of an op benchmarked as a plain function (the RoPE family): transformers'
    ``reference`` eager and under torch.compile, then each peer's function, ``peers`` mapping
    "liger" / "ligerd" to ``"module:name"``. ligerd's runs in local dispatch. A peer whose
    function does not import is reported and skipped."""
    out: Dict[str, Callable] = {"eager": lambda shape, dtype: reference,
                                "torch.compile": lambda shape, dtype: compiled(reference)}
    common.add_peer_site()
    for peer, where in peers.items():
        module, name = where.split(":")
        fn = peer_class(module, name)
        if isinstance(fn, Exception):
            print(f"[bench] {PEER_MODULES[peer][1]} not importable, skipped: {fn}")
            continue
        if peer == "ligerd":
            import ligerd
            ligerd.set_dispatch_mode("local")
        out[peer] = lambda shape, dtype, fn=fn: fn
    return out


def label(shape: Dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in shape.items())


def _outputs(out) -> List[torch.Tensor]:
    outs = out if isinstance(out, (tuple, list)) else [out]
    return [o for o in outs if isinstance(o, torch.Tensor) and o.requires_grad]


def _params(fn) -> List[torch.Tensor]:
    if isinstance(fn, torch.nn.Module):
        return [q for q in fn.parameters() if q.requires_grad]
    return []


def _grad_outputs(outs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    return [torch.ones_like(o) if o.numel() == 1 else torch.randn_like(o) for o in outs]


def generic_step(fn, args, grad_idx, p) -> Callable[[], object]:
    """One step of pass p (see the module docstring)."""
    inputs = [args[i] for i in grad_idx] + _params(fn)
    if p == "fwd":
        def fwd():
            with torch.no_grad():
                return fn(*args)
        return fwd
    if p == "bwd":
        # Backward ops run on their forward's stream: the forward runs on the stream the steps
        # are timed and captured on.
        # The args were made on the current stream: the bench stream waits for them first (without
        # this the retained forward can read targets or inputs not yet written: the H100 run's
        # cross-entropy rows hit torch's out-of-range-target assert that way).
        ctx = contextlib.nullcontext()
        if DEVICE == "cuda":
            common.bench_stream().wait_stream(torch.cuda.current_stream())
            ctx = torch.cuda.stream(common.bench_stream())
        with ctx:
            outs = _outputs(fn(*args))
            grads = _grad_outputs(outs)
        return lambda: torch.autograd.grad(outs, inputs, grads, retain_graph=True)
    if p == "full":
        grads = []

        def full():
            outs = _outputs(fn(*args))
            if not grads:  # shapes are known after the first forward (which is a warm-up)
                grads.extend(_grad_outputs(outs))
            return torch.autograd.grad(outs, inputs, grads)
        return full
    raise ValueError(f"unknown pass {p!r}")


def _fresh_args(mod, shape, dtype):
    args, grad_idx = mod.make_args(shape, dtype)
    for i in grad_idx:
        args[i].requires_grad_(True)
    return args, grad_idx


def _step(mod, fn, args, grad_idx, p):
    maker = getattr(mod, "make_steps", None)
    return maker(fn, args, grad_idx, p) if maker else generic_step(fn, args, grad_idx, p)


def peak_extra_mib(mod, fn, shape, dtype) -> float:
    """MiB a full step adds to the allocator's high-water mark over its inputs and parameters."""
    args, grad_idx = _fresh_args(mod, shape, dtype)
    step = _step(mod, fn, args, grad_idx, "full")
    step()  # warm-up: JIT compiles, lazy allocations, caches
    torch.cuda.synchronize()
    gc.collect()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = step()
    torch.cuda.synchronize()
    extra = (torch.cuda.max_memory_allocated() - base) / 2**20
    del result, step, args
    return extra


def _fail_note(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]


def run(mod, shapes: Sequence[Dict[str, int]], impls: Dict[str, Callable], dtype=torch.bfloat16,
        passes: Sequence[str] = None, eager_launch=True, memory=True, log=print) -> List[dict]:
    """One row per (impl, shape, pass): ms (CUDA-graph replay, or the eager-launch time where
    capture failed: see ``method`` and ``note``), GB/s by the module's byte model,
    ms_eager_launch and host_us (bench/ligerd_bench/common.py), and peak_extra_MiB on the "full" rows."""
    passes = [p for p in (passes or mod.PASSES) if p in mod.PASSES]
    rows = []
    b = torch.tensor([], dtype=dtype).element_size()
    for shape in shapes:
        for name, factory in impls.items():
            try:
                fn = factory(shape, dtype)
                if isinstance(fn, torch.nn.Module):
                    fn = fn.to(DEVICE, dtype)
            except Exception as e:  # noqa: BLE001
                log(f"[bench] {mod.OP} {name} {label(shape)}: cannot build: {_fail_note(e)}")
                continue
            for p in passes:
                step_bytes = mod.bytes_moved(shape, p, b)
                k = common.rotation(step_bytes)
                row = {"op": mod.OP, "impl": name, "shape": label(shape), "pass": p, "copies": k,
                       "dtype": str(dtype).replace("torch.", ""), **shape}
                try:
                    steps = [_step(mod, fn, *_fresh_args(mod, shape, dtype), p) for _ in range(k)]
                    if eager_launch:
                        row["ms_eager_launch"], row["host_us"] = common.eager_ms(steps)
                    try:
                        row["ms"], _ = common.graph_ms(steps)
                        row["method"] = "cuda-graph"
                    except Exception as e:  # noqa: BLE001
                        log(f"[bench] {mod.OP} {name} {p} {label(shape)}: graph capture failed "
                            f"({_fail_note(e)}); eager-launch time used")
                        torch.cuda.synchronize()
                        if "ms_eager_launch" not in row:
                            row["ms_eager_launch"], row["host_us"] = common.eager_ms(steps)
                        row["ms"] = row["ms_eager_launch"]
                        row["method"] = "eager-events"
                        row["note"] = f"graph capture failed: {_fail_note(e)}"
                    steps = None
                    if memory and p == "full":
                        gc.collect()
                        row["peak_extra_MiB"] = peak_extra_mib(mod, fn, shape, dtype)
                except Exception as e:  # noqa: BLE001
                    log(f"[bench] {mod.OP} {name} {p} {label(shape)}: FAILED: {_fail_note(e)}")
                    row.update(ms=float("nan"), method="failed", note=_fail_note(e))
                    steps = None
                    torch.cuda.synchronize()
                row["GBps"] = step_bytes / (row["ms"] * 1e-3) / 1e9
                if row.get("ms_eager_launch"):
                    row["GBps_eager_launch"] = step_bytes / (row["ms_eager_launch"] * 1e-3) / 1e9
                rows.append(row)
                log(f"[bench] {mod.OP} {name:>13} {p:>4} {label(shape)}: {row['ms']:8.4f} ms "
                    f"{row['GBps']:7.0f} GB/s [{row.get('method')}, x{k}]"
                    + (f", peak +{row['peak_extra_MiB']:.0f} MiB" if "peak_extra_MiB" in row else ""))
                gc.collect()
                torch.cuda.empty_cache()
            del fn
    return rows
