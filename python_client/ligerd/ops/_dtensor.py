"""DTensor inputs to the row-wise ops (RMSNorm, LayerNorm) and the element-wise gated activations
(SwiGLU, GeGLU). Tensor and sequence parallelism hand the norms activations sharded over a device
mesh and replicated weights (torch's SequenceParallel style), and the activations the column-
parallel gate and up projections' outputs, sharded on the intermediate dimension.

A row-wise op normalises each row over the hidden (last) dimension on its own, so it runs on each
rank's local shard unchanged whenever that dimension is whole on every rank: activations sharded on
any other dimension (Shard(d), d != last) or replicated, weights replicated. The result is a DTensor
with the activation's placements. The weight's gradient from a rank's shard of the rows is that
rank's part of the sum, so its local gradient is declared Partial on each mesh dimension where the
activation is sharded (DTensor reduces it when it is read as Replicate). Anything else (the hidden
dimension sharded, a sharded weight, Partial activations, mixed meshes) is refused with an error
naming the op, instead of failing deep inside torch."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from ligerd.ops import _rows


def any_dtensor(*ts) -> bool:
    """True if any of ``ts`` is a DTensor. By its class's module, so that neither a plain call nor
    a torch.compile trace imports torch.distributed.tensor (a second) to find out."""
    return any(t is not None and type(t).__module__.startswith("torch.distributed.tensor") for t in ts)


def rowwise(op: str, fn: Callable, x, params: Sequence[Optional[torch.Tensor]], *args, **kw):
    """fn(x_local, *params_local, *args, **kw) on the local shards (module docstring), returned as a
    DTensor placed like ``x``."""
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard
    if not isinstance(x, DTensor):
        _rows.fail(op, "a weight is a DTensor but the input is not; pass both as DTensors on one mesh")
    mesh, placements = x.device_mesh, tuple(x.placements)
    last = x.ndim - 1
    for i, p in enumerate(placements):
        if isinstance(p, Shard) and p.dim % x.ndim == last:
            _rows.fail(op, f"the input is sharded on its hidden (last) dimension (mesh dim {i}: {p}); "
                           "a row-wise norm needs whole rows: shard the sequence or batch dimension, "
                           "or gather the hidden dimension first")
        if not isinstance(p, (Shard, Replicate)):
            _rows.fail(op, f"input placement {p} on mesh dim {i} is not supported (Shard of a "
                           "non-hidden dimension or Replicate)")
    grad_pl = [Partial() if isinstance(p, Shard) else Replicate() for p in placements]
    local = []
    for j, w in enumerate(params):
        if w is None or not isinstance(w, DTensor):
            if w is not None:
                _rows.fail(op, f"the input is a DTensor but parameter {j} is a plain tensor; "
                               "make it a replicated DTensor on the input's mesh")
            local.append(w)
            continue
        if w.device_mesh != mesh:
            _rows.fail(op, f"parameter {j} is on another device mesh than the input")
        if any(not isinstance(p, Replicate) for p in w.placements):
            _rows.fail(op, f"parameter {j} must be replicated, got placements {tuple(w.placements)}")
        local.append(w.to_local(grad_placements=grad_pl))
    y = fn(x.to_local(), *local, *args, **kw)
    return DTensor.from_local(y, mesh, placements, run_check=False, shape=x.shape, stride=x.stride())


def elementwise(op: str, fn: Callable, a, b, *args):
    """fn(a_local, b_local, *args) for two DTensors placed alike (same mesh, shape and placements,
    Shard or Replicate: an element-wise op needs nothing else), returned placed like ``a``."""
    from torch.distributed.tensor import DTensor, Replicate, Shard
    if not (isinstance(a, DTensor) and isinstance(b, DTensor)):
        _rows.fail(op, "one input is a DTensor and the other is not; pass both as DTensors placed alike")
    if a.device_mesh != b.device_mesh or tuple(a.placements) != tuple(b.placements) or a.shape != b.shape:
        _rows.fail(op, f"the inputs must be on one mesh with one shape and placements, got "
                       f"{tuple(a.shape)} {tuple(a.placements)} and {tuple(b.shape)} {tuple(b.placements)}")
    for i, p in enumerate(a.placements):
        if not isinstance(p, (Shard, Replicate)):
            _rows.fail(op, f"input placement {p} on mesh dim {i} is not supported (Shard or Replicate)")
    c = fn(a.to_local(), b.to_local(), *args)
    return DTensor.from_local(c, a.device_mesh, a.placements, run_check=False, shape=a.shape,
                              stride=a.stride())
