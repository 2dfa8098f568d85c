"""What the row-wise norm ops (RMSNorm, fused add + RMSNorm, LayerNorm) share on the Python side:
friendly input checks with op-named messages, and the (rows, hidden) view the kernels read.

Each check reads cheap tensor attributes (is_cuda, dtype, dim, shape, get_device) and builds its
message only when it fails, so running them on every call costs little."""

from __future__ import annotations

from typing import Optional

import torch

from ligerd import _backend
from ligerd._errors import OpInputError

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_DIMS = 4


def fail(op: str, msg: str):
    raise OpInputError(f"ligerd op {op}: {msg}", op=op)


def check_float_tensor(op: str, name: str, X) -> None:
    """X: a torch.Tensor on a CUDA device (the CPU only under a test launcher) of fp32, bf16 or
    fp16."""
    if not isinstance(X, torch.Tensor):
        fail(op, f"{name} must be a torch.Tensor, got {type(X).__name__}")
    if not X.is_cuda and not _backend.cpu_allowed():
        fail(op, f"{name} must be a CUDA tensor, got a tensor on {X.device}")
    if X.dtype not in SUPPORTED_DTYPES:
        fail(op, f"{name} has dtype {X.dtype}; supported: float32, bfloat16, float16")


def check_rows(op: str, name: str, X, like: Optional[torch.Tensor] = None,
               like_name: str = "X") -> None:
    """X: a CUDA float tensor of 1 to 4 dims with a non-empty last dim; with ``like``, of its
    shape, dtype and device too (a residual, a gradient)."""
    check_float_tensor(op, name, X)
    nd = X.dim()
    if nd < 1 or nd > MAX_DIMS:
        fail(op, f"{name} must have 1 to {MAX_DIMS} dimensions (rows flattened x hidden), got "
                 f"shape {tuple(X.shape)} ({nd}-D)")
    if X.shape[-1] == 0:
        fail(op, f"{name} has hidden size 0 (shape {tuple(X.shape)})")
    if like is None:
        return
    if X.shape != like.shape:
        fail(op, f"{name} has shape {tuple(X.shape)} but {like_name} has {tuple(like.shape)}; "
                 f"they must match")
    if X.dtype != like.dtype:
        fail(op, f"mixed dtypes: {like_name} is {like.dtype} but {name} is {X.dtype}")
    dev = X.get_device()
    if dev != like.get_device() or (dev < 0 and X.device != like.device):
        fail(op, f"{name} is on {X.device} but {like_name} is on {like.device}")


def check_param(op: str, name: str, W, X: torch.Tensor) -> None:
    """A per-column parameter (weight, bias) of X's hidden size, X's dtype or float32 (fp32
    master weights with bf16/fp16 activations, as Liger allows); None passes."""
    if W is None:
        return
    if not isinstance(W, torch.Tensor):
        fail(op, f"{name} must be a torch.Tensor or None, got {type(W).__name__}")
    # get_device() is an int (-1 off the GPU): cheaper per call than comparing torch.device
    # objects, which are compared only when both are off the GPU.
    w_dev = W.get_device()
    if w_dev != X.get_device() or (w_dev < 0 and W.device != X.device):
        fail(op, f"{name} is on {W.device} but X is on {X.device}")
    if W.dim() != 1 or W.shape[0] != X.shape[-1]:
        fail(op, f"{name} must have shape ({X.shape[-1]},) to match X's hidden size, got "
                 f"{tuple(W.shape)}")
    if W.dtype != X.dtype and W.dtype != torch.float32:
        fail(op, f"mixed dtypes: X is {X.dtype} but {name} is {W.dtype}; {name} must be "
                 f"{X.dtype} or torch.float32")


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """(rows, hidden) view of ``t`` that the kernels can read directly, or a contiguous copy.

    The kernels take rows at any pitch as long as the last dimension is contiguous and the
    leading dimensions flatten into rows with one stride (e.g. a slice ``x[..., :n]`` of a wider
    buffer): those are passed as they are. Anything else (a transpose, a stride in the hidden
    dimension) is copied to a contiguous tensor here, so nothing is ever misread; the copy costs
    one extra read and write of X, as Liger's ``ensure_contiguous`` does for every input."""
    n = t.shape[-1]
    if t.is_contiguous():
        return t.view(-1, n)
    if t.stride(-1) == 1 or n == 1:
        try:
            v = t.view(-1, n)
        except RuntimeError:
            v = None
        if v is not None and (v.shape[0] <= 1 or v.stride(0) >= n):
            return v
    return t.contiguous().view(-1, n)


def param_grad_buffer(x: torch.Tensor, w: Optional[torch.Tensor], wanted: bool) -> Optional[torch.Tensor]:
    """The buffer a weight/bias gradient is reduced into (zeros when there are no rows: the
    kernels then launch only the reduction, which writes zeros, but a fresh zeros tensor is as
    cheap and leaves nothing to chance), or None when it is not wanted."""
    if w is None or not wanted:
        return None
    if x.shape[0] == 0:
        return torch.zeros_like(w)
    return torch.empty_like(w)
