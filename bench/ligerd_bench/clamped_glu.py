"""Clamped-GLU benchmark rows: the activation between the expert GEMMs of GPT-OSS
(transformers' ``GptOssExperts._apply_gate``: interleaved gate/up, ``gate.clamp(max=limit)``,
``up.clamp(-limit, limit)``, ``(up + 1) * gate * sigmoid(alpha * gate)``) and DeepSeek-V4
(``DeepseekV4Experts._apply_gate``: halves, ``silu(gate.clamp(max=limit)) * up.clamp(...)``),
forward, backward and forward+backward ("full"), bf16, for torch eager (transformers' own
formula, ~8 kernels each way), torch.compile of it and ligerd's op (ligerd.ops.clamped_glu).
Liger-Kernel 0.8.5 has no such op (it leaves both experts to transformers). Run by
bench/run_kernels.py through bench/ligerd_bench/harness.py.

Shapes: x [M, N] with N = 2I: GPT-OSS-20B's I = 2880 at 32K routed rows (16K tokens x top-4;
360 MiB per bf16 x), then DeepSeek-V4's halves layout at I = 2048, then odd 4097 x 2 * 1447
(ligerd's element kernels: I not a multiple of the vector).

Byte model (minimal traffic, what a fused kernel must move): fwd reads x and writes y =
(N + N/2) * M * b; bwd reads x and dy and writes dx = (N + N/2 + N) * M * b; full, with the
forward's output and the backward's input each counted once, = (N + N/2) + (N + N/2 + N) = 4 N
per row. Both kernels are pure streams, so % of copy bandwidth is the figure of merit.
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch

from ligerd_bench import harness

OP = "clamped_glu"
TITLE = "Clamped GLU (GPT-OSS / DeepSeek-V4 experts)"
PASSES = ("fwd", "bwd", "full")
# In units of M * N elements (N = 2I).
BYTES_FACTOR = {"fwd": 1.5, "bwd": 2.5, "full": 4.0}
ALPHA, LIMIT = 1.702, 7.0


def _gpt_oss(x):
    gate, up = x[..., ::2], x[..., 1::2]
    gate = gate.clamp(min=None, max=LIMIT)
    up = up.clamp(min=-LIMIT, max=LIMIT)
    return (up + 1) * (gate * torch.sigmoid(gate * ALPHA))


def _dsv4(x):
    gate, up = x.chunk(2, dim=-1)
    return torch.nn.functional.silu(gate.clamp(max=LIMIT)) * up.clamp(min=-LIMIT, max=LIMIT)


def shapes(quick: bool) -> List[dict]:
    first = {"M": 32768, "N": 5760, "pairs": 1}
    if quick:
        return [first]
    return [first, {"M": 32768, "N": 4096, "pairs": 0}, {"M": 4097, "N": 2894, "pairs": 1}]


def bytes_moved(shape: dict, p: str, elem_bytes: int) -> int:
    return int(BYTES_FACTOR[p] * shape["M"] * shape["N"] * elem_bytes)


def make_args(shape: dict, dtype):
    # A gate_up projection's output spread past the limit (about 5% of entries clamped).
    x = 3.5 * torch.randn(shape["M"], shape["N"], device=harness.DEVICE, dtype=torch.float32)
    return [x.to(dtype)], [0]


def _eager_for(shape):
    return _gpt_oss if shape.get("pairs", 1) else _dsv4


def impls() -> Dict[str, Callable]:
    """name -> factory(shape, dtype) -> fn. Unavailable peers are reported and skipped."""
    out: Dict[str, Callable] = {
        "eager": lambda s, d: _eager_for(s),
        "torch.compile": lambda s, d: harness.compiled(_eager_for(s)),
    }
    try:
        from ligerd.ops.clamped_glu import clamped_swiglu, gpt_oss_glu
    except Exception as e:  # noqa: BLE001  (reported, like a missing peer)
        print(f"[bench] ligerd not importable, skipped: {e}")
        return out
    out["ligerd"] = lambda s, d: ((lambda x: gpt_oss_glu(x, ALPHA, LIMIT)) if s.get("pairs", 1)
                                  else (lambda x: clamped_swiglu(x, LIMIT)))
    return out
