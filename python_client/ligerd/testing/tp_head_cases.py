"""The vocab-parallel loss on a head sharded by torch's tensor-parallel API, for
tests/python/test_vocab_parallel_loss.py: a tiny Llama whose ``lm_head`` is
``parallelize_module(..., {"lm_head": ColwiseParallel()})`` (its weight a DTensor sharded
Shard(0) over the ranks' vocabulary), its loss computed from the backbone's hidden states with
``vocab_parallel_fused_linear_cross_entropy`` on that DTensor weight, against transformers' own
loss of the unsharded model (``single``): the loss, the head's gradient (gathered) and the
backbone's gradients (whole on every rank: the input gradient is all-reduced)."""

from __future__ import annotations

from typing import Dict

import torch

SEED, BATCH, SEQ = 99, 2, 11
CHECKED = ("lm_head.weight", "model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
           "model.layers.1.mlp.down_proj.weight", "model.norm.weight")


def _model_and_batch():
    from ligerd.testing import tiny_models as tm
    cfg = tm.tiny_config("llama")
    model = tm.build("llama", seed=0, cfg=cfg).train()  # transformers' modules: nothing patched
    g = torch.Generator().manual_seed(SEED)
    ids = torch.randint(0, cfg.vocab_size, (BATCH, SEQ), generator=g)
    return model, cfg, ids


def single(rank: int = 0, world: int = 1) -> Dict:
    """transformers' loss and gradients of the unsharded model (a ligerd.testing.ranks.run target
    too, world 1)."""
    model, _, ids = _model_and_batch()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = dict(model.named_parameters())
    return {"loss": float(loss), "grads": {k: grads[k].grad.double() for k in CHECKED}}


def worker(rank: int, world: int) -> Dict:
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor.parallel import ColwiseParallel, parallelize_module

    from ligerd.parallel import vocab_parallel_fused_linear_cross_entropy
    model, cfg, ids = _model_and_batch()
    mesh = DeviceMesh("cpu", list(range(world)))
    parallelize_module(model, mesh, {"lm_head": ColwiseParallel()})
    hidden = model.model(input_ids=ids).last_hidden_state          # [B, S, H], the same on every rank
    h = hidden[:, :-1].reshape(-1, cfg.hidden_size)                 # transformers' shift: token t
    t = ids[:, 1:].reshape(-1)                                      # predicts token t + 1
    loss = vocab_parallel_fused_linear_cross_entropy(h, model.lm_head.weight, t,
                                                     vocab_size=cfg.vocab_size)
    loss.backward()
    params = dict(model.named_parameters())
    w = params["lm_head.weight"]
    grads = {}
    for k in CHECKED:
        g = params[k].grad
        grads[k] = (g.full_tensor() if hasattr(g, "full_tensor") else g).double()
    return {"loss": float(loss), "grads": grads, "head_local_rows": w.to_local().shape[0],
            "head_placements": str(tuple(w.placements))}


__all__ = ["worker", "single", "CHECKED"]
