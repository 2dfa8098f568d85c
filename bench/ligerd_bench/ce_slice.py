"""The vocabulary-sliced cross-entropy steps (kernels/ops/ce_slice.cuh), the sliced fused linear
cross-entropy's two kernels, on one [T, S] logits slice: "fwd" is ce_slice_stats (fold the slice
into running per-token statistics), "bwd" ce_slice_grad (d logits written over the slice), "full"
both. Peers: the same steps in torch eager and under torch.compile (Liger-Kernel has no such op).
Run by bench/run_kernels.py through bench/ligerd_bench/harness.py.

Shapes: the sliced sweep's default slice at 8192 x 4096 x 128256 (1024 tokens x 16384 classes),
then its first default (2048 x 4096) and a Gemma-width slice.

Byte model: fwd reads the slice (T*S*b; the per-token statistics, 16 bytes a token, are left
out), bwd reads and writes it (2*T*S*b), full 3*T*S*b.
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch

from ligerd_bench import harness

OP = "ce_slice"
TITLE = "Sliced cross-entropy steps (one [T, S] logits slice)"
PASSES = ("fwd", "bwd", "full")
BYTES_FACTOR = {"fwd": 1, "bwd": 2, "full": 3}
V0 = 16384  # the slice's first class: not the first slice, so the stats merge with earlier ones


def shapes(quick: bool) -> List[dict]:
    first = {"M": 1024, "N": 16384}
    if quick:
        return [first]
    return [first, {"M": 2048, "N": 4096}, {"M": 1024, "N": 32768}]


def bytes_moved(shape: dict, p: str, elem_bytes: int) -> int:
    return BYTES_FACTOR[p] * shape["M"] * shape["N"] * elem_bytes


def make_args(shape: dict, dtype):
    M, N = shape["M"], shape["N"]
    dev = harness.DEVICE
    z = 3 * torch.randn(M, N, device=dev, dtype=dtype)
    t = torch.randint(0, 4 * N, (M,), device=dev)
    stats = torch.stack([torch.full((M,), 5.0), torch.full((M,), 100.0), torch.zeros(M), torch.zeros(M)], 1)
    coef = torch.stack([torch.full((M,), 12.0), torch.full((M,), 1 / 8192), torch.zeros(M),
                        torch.full((M,), -1 / 8192)], 1)
    return [z, t, stats.to(dev).contiguous(), coef.to(dev).contiguous()], []


def _torch_stats(z, t, stats):
    """The statistics update in torch (fp32), as ligerd/testing/reference/ce_slice.py states it."""
    zf = z.float()
    m = zf.amax(1)
    s = torch.exp(zf - m[:, None]).sum(1)
    pm, ps = stats[:, 0], stats[:, 1]
    nm = torch.maximum(pm, m)
    local = t - V0
    here = (local >= 0) & (local < z.shape[1])
    zy = zf.gather(1, local.clamp(0, z.shape[1] - 1)[:, None])[:, 0]
    return torch.stack([nm, ps * torch.exp(pm - nm) + s * torch.exp(m - nm), stats[:, 2] + zf.sum(1),
                        torch.where(here, zy, stats[:, 3])], 1)


def _torch_grad(z, t, coef):
    zf = z.float()
    cols = torch.arange(V0, V0 + z.shape[1], device=z.device)
    g = coef[:, 1:2] * torch.exp(zf - coef[:, :1]) + coef[:, 2:3] + coef[:, 3:4] * (cols[None, :] == t[:, None])
    return g.to(z.dtype)


class _Torch:
    def __init__(self, wrap):
        self.stats, self.grad = wrap(_torch_stats), wrap(_torch_grad)


class _Ligerd:
    def __init__(self):
        import ligerd
        from ligerd.ops import _flce_sliced
        ligerd.set_dispatch_mode("local")
        self.sl = _flce_sliced

    def stats(self, z, t, stats):
        self.sl.slice_stats_(z, t, None, stats, None, V0, False, 0.0)
        return stats

    def grad(self, z, t, coef):
        self.sl.slice_grad_(z, t, None, coef, V0, 0.0, -100)  # in place, as the sweep runs it
        return z


def impls() -> Dict[str, Callable]:
    return {"eager": lambda s, d: _Torch(lambda f: f),
            "torch.compile": lambda s, d: _Torch(harness.compiled),
            "ligerd": lambda s, d: _Ligerd()}


def make_steps(fn, args, grad_idx, p):
    z, t, stats, coef = args
    if p == "fwd":
        return lambda: fn.stats(z, t, stats)
    if p == "bwd":
        return lambda: fn.grad(z, t, coef)

    def full():
        fn.stats(z, t, stats)
        return fn.grad(z, t, coef)
    return full
