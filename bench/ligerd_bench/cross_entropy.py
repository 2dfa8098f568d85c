"""Cross-entropy benchmark rows: loss (mean over tokens) of [M, V] logits, bf16, for torch eager
(Hugging Face's ForCausalLM loss: ``F.cross_entropy(logits.float(), target)``), torch.compile of
it, Liger-Kernel's LigerCrossEntropyLoss and ligerd's LigerCrossEntropyLoss.

Passes, all with logits that require grad (a training step):
- fwd: the forward alone. Liger and ligerd compute the gradient here too (written over the
  logits), torch does not: compare "full" rows across implementations.
- bwd: the backward alone after one retained forward: ~nothing for Liger and ligerd (the stored
  gradient times grad_output == 1 is skipped); torch's softmax backward for the others. ligerd's
  bwd step calls its scale op on the stored gradient directly (its custom op declares the in-place
  write, so autograd refuses to replay one retained graph; Liger's Triton kernel mutates without
  telling autograd, so the generic step works for it).
- full: forward + backward.

Byte model (minimal traffic): fwd reads the logits once, M*V*b (the loss alone needs no more);
bwd and full read the logits and write their gradient, 2*M*V*b (a row kept on chip between the
two passes; a two-pass kernel whose second read misses L2 moves 3*M*V*b, so 67% of copy bandwidth
by this model is that kernel's roof).
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

from ligerd_bench import harness

OP = "cross_entropy"
TITLE = "Cross-entropy (mean, grad of logits)"
PASSES = ("fwd", "bwd", "full")
BYTES_FACTOR = {"fwd": 1, "bwd": 2, "full": 2}
IGNORE = -100


def shapes(quick: bool) -> List[dict]:
    """LLaMA-3-8B (16K tokens x vocab 128256) first, then 8K tokens at the other vocabularies."""
    first = {"M": 16384, "V": 128256}
    return [first] if quick else [first, {"M": 8192, "V": 128256}, {"M": 8192, "V": 32000},
                                  {"M": 8192, "V": 151936}]


def bytes_moved(shape: dict, p: str, elem_bytes: int) -> int:
    return BYTES_FACTOR[p] * shape["M"] * shape["V"] * elem_bytes


def make_args(shape: dict, dtype):
    """Logits in [-3, 3] and targets from a hash of (row, column), built without the CUDA RNG: a
    peer whose CUDA-graph capture fails (Liger's forward syncs on .item()) can leave the RNG's
    capture state broken for the rest of the process ("Offset increment outside graph capture"),
    which must not take every later row down with it (it did, on the H100 run)."""
    M, V = shape["M"], shape["V"]
    dev = harness.DEVICE
    x = torch.empty(M, V, device=dev, dtype=dtype)
    cols = torch.arange(V, device=dev, dtype=torch.float32) * 78.233
    step = max(1, (64 << 20) // (4 * V))  # rows per slab: a 64 MiB fp32 temporary
    for r0 in range(0, M, step):
        rows = torch.arange(r0, min(r0 + step, M), device=dev, dtype=torch.float32)[:, None] * 12.9898
        h = torch.sin(rows + cols) * 43758.5453
        x[r0:r0 + rows.shape[0]] = (6 * (h - torch.floor(h)) - 3).to(dtype)
    t = (torch.arange(M, device=dev, dtype=torch.int64) * 7919 + 17) % V
    t[::50] = IGNORE  # some padding, as a batch has
    return [x, t], [0]


def _eager(x, t):
    return F.cross_entropy(x.float(), t, ignore_index=IGNORE)


def impls() -> Dict[str, Callable]:
    out: Dict[str, Callable] = {
        "eager": lambda s, d: _eager,
        "torch.compile": lambda s, d: harness.compiled(_eager),
    }
    # ligerd before Liger: Liger's graph capture fails (host syncs) and may leave the process's
    # CUDA state worse for whatever runs after it.
    return harness.add_peers(out, "LigerCrossEntropyLoss", lambda cls, s, d: cls(ignore_index=IGNORE),
                             order=("ligerd", "liger"))


def _is_ligerd(fn) -> bool:
    try:
        from ligerd.transformers import LigerCrossEntropyLoss as OursCE
    except Exception:  # noqa: BLE001
        return False
    return isinstance(fn, OursCE)


def make_steps(fn, args, grad_idx, p):
    x, t = args
    if p == "fwd":
        return lambda: fn(x, t)  # grad mode on: the training forward (grad of logits for Liger/ligerd)
    if p == "bwd" and _is_ligerd(fn):
        from ligerd.ops import cross_entropy as ce
        fn(x, t)  # the forward leaves the gradient in x
        # what autograd hands the backward of a mean: grad_output 1 per row (each row skipped)
        ones = torch.ones(x.shape[0], device=x.device)
        return lambda: ce.scale_(x.detach(), ones)
    return harness.generic_step(fn, args, grad_idx, p)
