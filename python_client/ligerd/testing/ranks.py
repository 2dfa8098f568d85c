"""Run a function on N ranks of a fresh torch.distributed process group, for the multi-rank tests
(tests/python/test_vocab_parallel_loss.py and test_ddp_cpu.py with gloo on the CPU,
tests/gpu/test_multi_gpu.py with NCCL, one GPU per rank).

``run(fn, world, *args)`` starts ``world`` processes, each calling ``fn(rank, world, *args)``
after ``init_process_group``; what ``fn`` returns (picklable) comes back as a list in rank order.
On the CPU each rank installs the float64 reference launcher (ligerd.testing.ref_executor), so
ligerd's ops run on CPU tensors as in the rest of the CPU suite. ``fn`` must be importable by name
(a module-level function of an importable module, e.g. under ligerd.testing): the processes are
forked from a forkserver that has imported torch (and ``preload``) once, so a call costs a fraction
of a second instead of a fresh interpreter per rank. A rank that raises fails the call with its
traceback; a group that does not finish within ``timeout`` seconds is killed and fails it too."""

from __future__ import annotations

import datetime
import multiprocessing
import os
import socket
import tempfile
import time
from typing import Callable, List, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as tmp

# torch._dynamo: DTensor.from_local imports it on first use (seconds)
_PRELOAD = ["torch", "torch.distributed", "torch.distributed.tensor", "torch._dynamo", "ligerd.testing.ref_executor",
            "ligerd.parallel",
            # the data-parallel tests' model (an ImportError here is ignored by the forkserver)
            "transformers", "transformers.models.llama.modeling_llama", "ligerd.transformers",
            "ligerd.testing.tiny_models"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn: Callable, world: int, port: int, backend: str, out_dir: str, args: tuple):
    if backend == "nccl":
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(1)  # N ranks on a few cores: no oversubscription
        from ligerd import _backend
        from ligerd.testing import ref_executor
        _backend._test_launcher = ref_executor.RefLauncher(describe=lambda t: None)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    try:
        result = fn(rank, world, *args)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run(fn: Callable, world: int, *args, backend: str = "gloo", timeout: float = 180.0,
        preload: Sequence[str] = ()) -> List:
    """fn(rank, world, *args) on ``world`` ranks; their results in rank order (module docstring)."""
    method = "forkserver" if backend == "gloo" else "spawn"  # CUDA ranks start clean
    if method == "forkserver":
        multiprocessing.set_forkserver_preload(_PRELOAD + list(preload))
    with tempfile.TemporaryDirectory(prefix="ligerd-ranks-") as out_dir:
        ctx = tmp.start_processes(_entry, args=(fn, world, _free_port(), backend, out_dir, tuple(args)),
                                  nprocs=world, join=False, start_method=method)
        deadline = time.monotonic() + timeout
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    if p.is_alive():
                        p.kill()
                raise TimeoutError(f"{world} ranks running {getattr(fn, '__name__', fn)} did not finish "
                                   f"within {timeout:.0f} s (a collective waiting for a rank?)")
        return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False) for r in range(world)]


__all__ = ["run"]
