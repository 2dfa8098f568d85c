"""SwiGLU benchmark rows: c = silu(a) * b on [M, F] (the elementwise part of a LLaMA MLP:
a = gate projection, b = up projection), forward, backward and both, for torch eager (HF's
`act_fn(gate) * up`), torch.compile of it, Liger-Kernel's LigerSiLUMulFunction and ligerd's
liger_swiglu.

Byte model (minimal traffic): fwd reads a, b and writes c = 3*M*F*b; bwd reads dc, a, b and
writes da, db = 5*M*F*b; full = 8*M*F*b. Liger and ligerd write da, db over a, b (their eager
backward is in place); torch writes fresh ones: the traffic is the same.

ligerd's "bwd" step calls its backward op (ligerd::glu_bwd_inplace) directly: the generic step
replays one retained graph's backward, and ligerd's in-place backward (a custom op that declares
its mutation of the saved a, b) is, rightly, refused by autograd a second time. Liger's Triton
backward mutates the saved tensors without telling autograd, so the generic step works for it.
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

from ligerd_bench import harness

OP = "swiglu"
TITLE = "SwiGLU"
PASSES = ("fwd", "bwd", "full")
BYTES_FACTOR = {"fwd": 3, "bwd": 5, "full": 8}
ACT = {"swiglu": F.silu, "geglu": lambda x: F.gelu(x, approximate="tanh")}
LIGER_FN = {"swiglu": ("liger_kernel.ops.swiglu", "LigerSiLUMulFunction"),
            "geglu": ("liger_kernel.ops.geglu", "LigerGELUMulFunction")}
LIGERD_FN = {"swiglu": "liger_swiglu", "geglu": "liger_geglu"}


def shapes(quick: bool) -> List[dict]:
    """LLaMA-3-8B's MLP (16K tokens x FFN 14336) first, then LLaMA-3.2-1B's (FFN 8192)."""
    first = {"M": 16384, "F": 14336}
    return [first] if quick else [first, {"M": 4096, "F": 14336}, {"M": 16384, "F": 8192}]


def bytes_moved(shape: dict, p: str, elem_bytes: int) -> int:
    return BYTES_FACTOR[p] * shape["M"] * shape["F"] * elem_bytes


def make_args(shape: dict, dtype):
    mk = lambda: torch.randn(shape["M"], shape["F"], device=harness.DEVICE, dtype=dtype)  # noqa: E731
    return [mk(), mk()], [0, 1]


def make_impls(kind: str) -> Dict[str, Callable]:
    act = ACT[kind]

    def eager(a, b):
        return act(a) * b

    out: Dict[str, Callable] = {
        "eager": lambda s, d: eager,
        "torch.compile": lambda s, d: harness.compiled(eager),
    }
    try:
        import importlib
        mod, name = LIGER_FN[kind]
        fn = getattr(importlib.import_module(mod), name)
        out["liger"] = lambda s, d: fn.apply
    except Exception as e:  # noqa: BLE001
        print(f"[bench] Liger-Kernel {kind} not importable, skipped: {e}")
    try:
        import ligerd.transformers as lt
        ours = getattr(lt, LIGERD_FN[kind])
        out["ligerd"] = lambda s, d: ours
    except Exception as e:  # noqa: BLE001
        print(f"[bench] ligerd not importable, skipped: {e}")
    return out


def impls() -> Dict[str, Callable]:
    return make_impls(OP)


def make_steps(fn, args, grad_idx, p):
    act = _ligerd_act(fn)
    if p != "bwd" or act is None:
        return harness.generic_step(fn, args, grad_idx, p)
    a, b = args
    dc = torch.randn_like(a)

    def bwd():
        with torch.no_grad():
            torch.ops.ligerd.glu_bwd_inplace(dc, a, b, act)
    return bwd


def _ligerd_act(fn):
    """ligerd's activation code if fn is liger_swiglu / liger_geglu, else None."""
    try:
        import ligerd.transformers as lt
        from ligerd.ops import glu
    except Exception:  # noqa: BLE001
        return None
    return {lt.liger_swiglu: glu.SILU, lt.liger_geglu: glu.GELU_TANH}.get(fn)
