"""Per-rank worker of tests/python/test_dtensor_norms.py: LigerRMSNorm and LigerLayerNorm under
torch's SequenceParallel (``parallelize_module``: replicated weights, the input sharded on the
sequence dimension), LigerSwiGLUMLP under tensor parallelism (gate and up projections
ColwiseParallel with DTensor outputs sharded on the intermediate dimension, down RowwiseParallel),
and the inputs ligerd refuses. Every rank builds the same full inputs from
the seed; the parent rebuilds them for its float64 reference."""

from __future__ import annotations

from typing import Dict

import torch

B, S, H, EPS, SEED = 2, 8, 24, 1e-6, 4321
INTER = 40  # the MLP's intermediate size: 20 columns per rank  # S = 8: SequenceParallel takes even local shards (4 + 4)


def inputs():
    """(x [B, S, H], w [H], b [H], dy [B, S, H]) in fp32."""
    g = torch.Generator().manual_seed(SEED)
    return (torch.randn(B, S, H, generator=g), 1 + 0.1 * torch.randn(H, generator=g),
            0.1 * torch.randn(H, generator=g), torch.randn(B, S, H, generator=g))


def reference(name: str):
    """(y, dx, dw, db) of the unsharded op in float64 on the same fp32 inputs (db None for RMSNorm:
    LigerRMSNorm's defaults, llama casting, offset 0)."""
    import torch.nn.functional as F
    x, w, b, dy = (t.double() for t in inputs())
    x, w, b = (t.clone().requires_grad_() for t in (x, w, b))
    if name == "rms_norm":
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w
    else:
        y = F.layer_norm(x, (H,), w, b, EPS)
    y.backward(dy)
    return y.detach(), x.grad, w.grad, b.grad if name == "layer_norm" else None


def mlp_reference():
    """(y, dx, {name: weight grad}) of the unsharded SwiGLU MLP in float64 (weights from the seed)."""
    x, _, _, dy = (t.double() for t in inputs())
    x = x.clone().requires_grad_()
    ws = {k: v.double().requires_grad_() for k, v in _mlp_weights().items()}
    g = x @ ws["gate_proj.weight"].T
    y = (torch.nn.functional.silu(g) * (x @ ws["up_proj.weight"].T)) @ ws["down_proj.weight"].T
    y.backward(dy)
    return y.detach(), x.grad, {k: v.grad for k, v in ws.items()}


def _mlp_weights():
    g = torch.Generator().manual_seed(SEED + 1)
    return {"gate_proj.weight": torch.randn(INTER, H, generator=g) / H ** 0.5,
            "up_proj.weight": torch.randn(INTER, H, generator=g) / H ** 0.5,
            "down_proj.weight": torch.randn(H, INTER, generator=g) / INTER ** 0.5}


def _mlp_worker(mesh, dev, x, dy) -> Dict:
    from types import SimpleNamespace

    from torch.distributed.tensor import Shard, distribute_tensor
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    from ligerd._errors import OpInputError
    from ligerd.ops.glu import swiglu
    from ligerd.transformers import LigerSwiGLUMLP
    mlp = LigerSwiGLUMLP(SimpleNamespace(hidden_size=H, intermediate_size=INTER, hidden_act="silu")).to(dev)
    with torch.no_grad():
        for k, v in _mlp_weights().items():
            mlp.get_parameter(k).copy_(v)
    parallelize_module(mlp, mesh, {"gate_proj": ColwiseParallel(use_local_output=False),
                                   "up_proj": ColwiseParallel(use_local_output=False),
                                   "down_proj": RowwiseParallel(input_layouts=Shard(-1))})
    xr = x.clone().requires_grad_()
    y = mlp(xr)  # the intermediate activations reach swiglu as Shard(-1) DTensors
    y.backward(dy)
    out = {"y": y.detach().cpu(), "dx": xr.grad.cpu(),
           "grads": {k: mlp.get_parameter(k).grad.full_tensor().cpu() for k in _mlp_weights()}}
    try:  # one DTensor, one plain tensor
        a = distribute_tensor(torch.ones(4, INTER, device=dev), mesh, [Shard(1)])
        swiglu(a, torch.ones(4, INTER, device=dev))
    except OpInputError as e:
        out["mixed"] = str(e)
    try:  # placed differently
        swiglu(distribute_tensor(torch.ones(4, INTER, device=dev), mesh, [Shard(1)]),
               distribute_tensor(torch.ones(4, INTER, device=dev), mesh, [Shard(0)]))
    except OpInputError as e:
        out["placements"] = str(e)
    return out


def worker(rank: int, world: int, device_kind: str = "cpu") -> Dict:
    """ligerd.testing.ranks.run target; ``device_kind`` "cuda" for NCCL ranks (one GPU each)."""
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    from torch.distributed.tensor.parallel import SequenceParallel, parallelize_module

    from ligerd._errors import OpInputError
    from ligerd.transformers import LigerLayerNorm, LigerRMSNorm
    mesh = DeviceMesh(device_kind, list(range(world)))
    dev = torch.device(f"cuda:{rank}" if device_kind == "cuda" else "cpu")
    x, w, b, dy = (t.to(dev) for t in inputs())
    out: Dict = {}
    for name in ("rms_norm", "layer_norm"):
        mod = LigerRMSNorm(H, eps=EPS) if name == "rms_norm" else LigerLayerNorm(H, eps=EPS, bias=True)
        mod = mod.to(dev)
        with torch.no_grad():
            mod.weight.copy_(w)
            if name == "layer_norm":
                mod.bias.copy_(b)
        parallelize_module(mod, mesh, SequenceParallel())
        xd = distribute_tensor(x, mesh, [Shard(1)])
        x_local = xd.to_local().clone().requires_grad_()  # this rank's tokens, as SequenceParallel takes them
        y = mod(x_local)
        y.backward(distribute_tensor(dy, mesh, [Shard(1)]))
        out[name] = {
            "y_placements": str(tuple(y.placements)),
            "y": y.full_tensor().detach().cpu(),
            "dx_local": x_local.grad.cpu(), "local_rows": tuple(x_local.shape),
            "dw": mod.weight.grad.full_tensor().cpu(),
            "db": mod.bias.grad.full_tensor().cpu() if name == "layer_norm" else None,
        }
        errs = {}
        from ligerd.ops.layer_norm import layer_norm
        from ligerd.ops.rms_norm import rms_norm

        def op(xd, wd):
            return rms_norm(xd, wd, EPS) if name == "rms_norm" else layer_norm(xd, wd, None, EPS)
        try:  # the hidden dimension sharded (called directly: SequenceParallel would redistribute it)
            op(distribute_tensor(x, mesh, [Shard(2)]), distribute_tensor(w, mesh, [Replicate()]))
        except OpInputError as e:
            errs["hidden"] = str(e)
        try:  # a plain (unreduced) weight beside a DTensor input
            plain = (LigerRMSNorm(H, eps=EPS) if name == "rms_norm"
                     else LigerLayerNorm(H, eps=EPS, bias=True)).to(dev)
            plain(distribute_tensor(x, mesh, [Shard(1)]))
        except OpInputError as e:
            errs["plain_weight"] = str(e)
        try:  # a sharded weight
            op(distribute_tensor(x, mesh, [Shard(1)]), distribute_tensor(w, mesh, [Shard(0)]))
        except OpInputError as e:
            errs["sharded_weight"] = str(e)
        out[name]["errors"] = errs
        # replicated input, replicated weight: whole rows on every rank
        xr = distribute_tensor(x, mesh, [Replicate()])
        out[name]["replicated"] = mod(xr).full_tensor().detach().cpu()
    out["swiglu_mlp"] = _mlp_worker(mesh, dev, x, dy)
    return out


__all__ = ["worker", "inputs", "reference", "mlp_reference", "INTER", "B", "S", "H", "EPS"]
