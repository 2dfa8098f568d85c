"""Inputs, per-rank worker and float64 reference of the vocab-parallel fused linear cross-entropy
tests (tests/python/test_vocab_parallel_loss.py on the CPU with gloo, tests/gpu/test_multi_gpu.py
with NCCL). A case is a dict:

    name, world (ranks in its group), V, H, BT, dtype, seed, reduction, ls (label smoothing),
    z (lse_square_scale), ignore (fraction of ignored targets), owner ("any": targets anywhere,
    "rank0": every target in rank 0's shard, so the other ranks own none), bias, chunk (tokens per
    chunk, LIGERD_FLCE_CHUNK; 0: the default), shards (explicit shard sizes, else torch.chunk's),
    grad_scale (the backward's upstream gradient), partial_dx (reduce_input_grad=False), no_grad (under torch.no_grad: the loss only), dtensor (the weight as a Shard(0) DTensor),
    breaks (an error case: "hidden", "targets", "vocab_size", "target_range", "none", "softcap").

Every rank builds the same full inputs from the seed and keeps its own shard, so the parent can
rebuild them for the reference."""

from __future__ import annotations

import os
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

IGNORE = -100


def shard_sizes(case) -> List[int]:
    from ligerd.parallel import vocab_shard_range
    if case.get("shards"):
        return list(case["shards"])
    return [b - a for a, b in (vocab_shard_range(case["V"], r, case["world"]) for r in range(case["world"]))]


def shard_bounds(case, rank: int):
    sizes = shard_sizes(case)
    lo = sum(sizes[:rank])
    return lo, lo + sizes[rank]


def make_inputs(case, device="cpu"):
    """(x [BT, H], W [V, H], b [V] or None, target [BT]) from the case's seed, on ``device``."""
    g = torch.Generator().manual_seed(case["seed"])
    V, H, BT, dt = case["V"], case["H"], case["BT"], case["dtype"]
    x = torch.randn(BT, H, generator=g).to(dt)
    W = (torch.randn(V, H, generator=g) * (2.0 / H ** 0.5)).to(dt)  # logits of std ~2
    b = (torch.randn(V, generator=g) * 0.5).to(dt) if case.get("bias") else None
    if case.get("owner") == "rank0":
        hi = shard_bounds(case, 0)[1]
        t = torch.randint(0, hi, (BT,), generator=g)
    else:
        t = torch.randint(0, V, (BT,), generator=g)
    drop = torch.rand(BT, generator=g) < case.get("ignore", 0.0)
    t[drop] = IGNORE
    put = (lambda v: v.to(device)) if device != "cpu" else (lambda v: v)
    return put(x), put(W), (put(b) if b is not None else None), put(t)


def reference(case) -> Dict[str, torch.Tensor]:
    """The unsharded loss and its gradients in float64 (torch's cross_entropy on the full logits,
    plus the z-loss), from the same rounded inputs the ranks use."""
    x, W, b, t = make_inputs(case)
    x, W = x.double().requires_grad_(), W.double().requires_grad_()
    b = b.double().requires_grad_() if b is not None else None
    logits = F.linear(x, W, b)
    red = case.get("reduction", "mean")
    ce = F.cross_entropy(logits, t, ignore_index=IGNORE, reduction="sum", label_smoothing=case.get("ls", 0.0))
    valid = t != IGNORE
    if case.get("z", 0.0):
        lse = torch.logsumexp(logits, dim=1)
        ce = ce + case["z"] * (lse[valid] ** 2).sum()
    loss = ce / max(int(valid.sum()), 1) if red == "mean" else ce
    (loss * case.get("grad_scale", 1.0)).backward()
    return {"loss": loss.detach(), "dx": x.grad, "dW": W.grad, "db": b.grad if b is not None else None}


def _kwargs(case) -> dict:
    kw = dict(ignore_index=IGNORE, reduction=case.get("reduction", "mean"),
              label_smoothing=case.get("ls", 0.0), lse_square_scale=case.get("z", 0.0))
    if case.get("partial_dx"):
        kw["reduce_input_grad"] = False
    brk = case.get("breaks")
    if brk == "vocab_size":
        kw["vocab_size"] = case["V"] + 1
    elif brk == "none":
        kw["reduction"] = "none"
    elif brk == "softcap":
        kw["softcap"] = 30.0
    return kw


def run_case(rank: int, case, group, device="cpu") -> Optional[dict]:
    """This rank's part of one case: its loss and gradients, or {"error": message}."""
    from ligerd._errors import OpInputError
    from ligerd.parallel import LigerVocabParallelFusedLinearCrossEntropyLoss
    if case.get("chunk"):
        os.environ["LIGERD_FLCE_CHUNK"] = str(case["chunk"])
    else:
        os.environ.pop("LIGERD_FLCE_CHUNK", None)
    x, W, b, t = make_inputs(case, device)
    lo, hi = shard_bounds(case, rank)
    brk = case.get("breaks")
    if brk == "target_range":
        t[0] = case["V"]
    if brk == "targets" and rank == 1:
        t[-1] = (t[-1] + 1) % case["V"] if t[-1] != IGNORE else 0
    Wr = W[lo:hi].clone()
    if brk == "hidden" and rank == 1:
        Wr = Wr[:, :-1].clone()
    Wr.requires_grad_()
    xr = x.clone().requires_grad_()
    br = b[lo:hi].clone().requires_grad_() if b is not None else None
    w_in = Wr
    if case.get("dtensor"):
        from torch.distributed.device_mesh import DeviceMesh
        from torch.distributed.tensor import DTensor, Shard
        mesh = DeviceMesh(device.split(":")[0] if isinstance(device, str) else "cuda",
                          list(range(case["world"])))
        w_in = DTensor.from_local(Wr, mesh, [Shard(0)], run_check=False, shape=W.shape, stride=W.stride())
        group = None  # taken from the mesh
    loss_fn = LigerVocabParallelFusedLinearCrossEntropyLoss(group=group, **_kwargs(case))
    if case.get("no_grad"):  # evaluation: the loss alone, no gradient computed
        with torch.no_grad():
            loss = loss_fn(w_in, xr, t, br)
        return {"loss": loss.cpu(), "requires_grad": loss.requires_grad, "bounds": (lo, hi)}
    try:
        loss = loss_fn(w_in, xr, t, br)
    except OpInputError as e:
        return {"error": str(e)}
    (loss * case.get("grad_scale", 1.0)).backward()
    out = {"loss": loss.detach().cpu(), "dx": xr.grad.cpu(), "dW": Wr.grad.cpu(),
           "db": br.grad.cpu() if br is not None else None, "bounds": (lo, hi)}
    return out


def worker(rank: int, world: int, cases, device_kind: str = "cpu") -> list:
    """ligerd.testing.ranks.run target: every case in order; a rank outside a case's group (its
    ``world`` smaller than this run's) contributes None. Groups of the first k ranks are made for
    every smaller world the cases name (all ranks take part in new_group, as torch asks)."""
    import torch.distributed as dist
    device = f"cuda:{rank}" if device_kind == "cuda" else "cpu"
    groups = {world: dist.group.WORLD}
    for w in sorted({c["world"] for c in cases} - {world}):
        groups[w] = dist.new_group(list(range(w)))
    out = []
    for case in cases:
        if rank >= case["world"]:
            out.append(None)
            continue
        out.append(run_case(rank, case, groups[case["world"]], device))
    return out


__all__ = ["make_inputs", "reference", "run_case", "worker", "shard_sizes", "shard_bounds", "IGNORE"]
