"""Data-parallel training of a tiny Llama patched with ``apply_liger_kernel_to_llama``, for
tests/python/test_ddp_cpu.py (gloo, CPU ranks, ligerd's ops through the reference launcher) and
tests/gpu/test_multi_gpu.py (NCCL, one GPU per rank, ligerd's kernels).

``worker(rank, world, mode, ...)`` trains ``STEPS`` SGD steps under DistributedDataParallel
(mode "ddp"), FSDP2's ``fully_shard`` (mode "fsdp2") or FSDP1's FullyShardedDataParallel (mode
"fsdp1", GPU ranks only: it refuses the CPU), each rank on its slice of every global
batch; ``single(...)`` trains the same model from the same initial weights in one process on the
whole global batch. With every sequence the same length and no ignored labels, each rank's mean
loss covers as many tokens as every other's, so the ranks' averaged gradient is the single
process's gradient and the two runs agree to float32 noise."""

from __future__ import annotations

from typing import Dict, List

import torch

STEPS, PER_RANK, SEQ, LR, SEED = 3, 2, 12, 0.2, 1234


def batches(vocab: int, world: int, steps: int = STEPS) -> List[torch.Tensor]:
    """``steps`` global batches of token ids [world * PER_RANK, SEQ] (labels = ids)."""
    g = torch.Generator().manual_seed(SEED)
    return [torch.randint(0, vocab, (world * PER_RANK, SEQ), generator=g) for _ in range(steps)]


def _model(device):
    import ligerd.transformers as lt
    from ligerd.testing import tiny_models as tm
    lt.revert_liger_kernel_patches()
    lt.apply_liger_kernel_to_llama()
    cfg = tm.tiny_config("llama")
    model = tm.build("llama", seed=0, cfg=cfg, device=device)  # the same weights on every rank
    return model.train(), cfg


def _optimizer(params):
    """SGD with momentum: an update proportional to the gradient, so a gradient averaged wrongly
    over the ranks (summed, or not reduced) moves the weights visibly; AdamW would hide a scale
    error and magnify float32 noise in near-zero gradients into whole learning-rate steps."""
    return torch.optim.SGD(params, lr=LR, momentum=0.9, foreach=False)


def _train(model, opt, batches_, rows, device) -> List[float]:
    losses = []
    for ids in batches_:
        x = ids[rows].to(device)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return losses


def single(world: int, device="cpu") -> Dict:
    """One process, the whole global batch: {"losses", "init" and "params" (fp64 on the CPU),
    "patched" (the final norm's class name)}. Leaves no patch behind."""
    import ligerd.transformers as lt
    try:
        model, cfg = _model(device)
        init = {k: v.detach().to("cpu", torch.float64, copy=True) for k, v in model.named_parameters()}
        losses = _train(model, _optimizer(model.parameters()), batches(cfg.vocab_size, world),
                        slice(None), device)
        return {"losses": [float(v) for v in losses], "init": init,
                "params": {k: p.detach().to("cpu", torch.float64) for k, p in model.named_parameters()},
                "patched": type(model.model.norm).__name__}
    finally:
        lt.revert_liger_kernel_patches()


def single_worker(rank: int, world: int, data_world: int) -> Dict:
    """``single(data_world)`` as a ligerd.testing.ranks.run target (world 1): the reference run in
    a process forked from the runner's forkserver, which has transformers imported already."""
    return single(data_world)


def worker(rank: int, world: int, mode: str, device_kind: str = "cpu") -> Dict:
    """ligerd.testing.ranks.run target: this rank's view of a data-parallel run. Losses are the
    ranks' mean per step; params the full (unsharded) parameters after the last step."""
    import torch.distributed as dist
    device = torch.device(f"cuda:{rank}" if device_kind == "cuda" else "cpu")
    model, cfg = _model(device)
    rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP
        wrapped = DDP(model, device_ids=[rank] if device.type == "cuda" else None)
    elif mode == "fsdp2":
        from torch.distributed.fsdp import fully_shard
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        wrapped = model
    elif mode == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        wrapped = FSDP(model, use_orig_params=True,
                       device_id=device if device.type == "cuda" else None)
    else:
        raise ValueError(f"mode must be 'ddp', 'fsdp2' or 'fsdp1', got {mode!r}")
    opt = _optimizer(wrapped.parameters())
    losses = _train(wrapped, opt, batches(cfg.vocab_size, world), rows, device)
    mean = torch.stack(losses).to(torch.float64)
    dist.all_reduce(mean)
    mean /= world
    params = {}
    if mode == "fsdp1":  # the flat parameters gathered back into the module's own
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        with FSDP.summon_full_params(wrapped):
            for k, p in model.named_parameters():
                params[k] = p.detach().to("cpu", torch.float64, copy=True)
        return {"losses": mean.tolist(), "params": params, "patched": type(model.model.norm).__name__}
    for k, p in model.named_parameters():
        t = p.detach()
        if hasattr(t, "full_tensor"):  # FSDP2: a DTensor sharded over the ranks
            t = t.full_tensor()
        params[k] = t.to("cpu", torch.float64)
    return {"losses": mean.tolist(), "params": params, "patched": type(model.model.norm).__name__}


__all__ = ["worker", "single", "single_worker", "batches", "STEPS", "PER_RANK", "SEQ"]
