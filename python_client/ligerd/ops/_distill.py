"""What the distillation losses (ligerd.ops.kl_div, jsd, tvd) share on the Python side: input
checks with op-named messages, the common dtype of a (student, teacher) pair, the labels and the
device-side count of non-ignored rows, and the in-place scaling of a gradient stored by the
forward (eager backward)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ligerd import _backend
from ligerd.ops import _rows

SUPPORTED_DTYPES = _rows.SUPPORTED_DTYPES
fail = _rows.fail


def check_pair(op: str, a_name: str, a, b_name: str, b, two_d: bool) -> None:
    """a and b: CUDA float tensors of one shape and device with a non-empty last dim; 2-D
    ([BT, V], as Liger's JSD and TVD unpack them) when two_d, else 1 to 4 dims. Their dtypes may
    differ (see promote)."""
    for name, t in ((a_name, a), (b_name, b)):
        if not isinstance(t, torch.Tensor):
            fail(op, f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_cuda and not _backend.cpu_allowed():
            fail(op, f"{name} must be a CUDA tensor, got a tensor on {t.device}")
        if t.dtype not in SUPPORTED_DTYPES:
            fail(op, f"{name} has dtype {t.dtype}; supported: float32, bfloat16, float16")
        if two_d and t.dim() != 2:
            fail(op, f"{name} must be 2-D (BT, V), got shape {tuple(t.shape)}")
        if not two_d and not 1 <= t.dim() <= _rows.MAX_DIMS:
            fail(op, f"{name} must have 1 to {_rows.MAX_DIMS} dimensions, got shape {tuple(t.shape)}")
    if a.shape != b.shape:
        fail(op, f"{a_name} has shape {tuple(a.shape)} but {b_name} has {tuple(b.shape)}; they must match")
    if a.device != b.device:
        fail(op, f"{a_name} is on {a.device} but {b_name} is on {b.device}")
    if a.shape[-1] == 0 and math_prod(a.shape[:-1]) > 0:
        fail(op, f"{a_name} has an empty last dim (a distribution over no classes), shape {tuple(a.shape)}")


def math_prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def promote(a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The pair in one dtype (the kernels read both as one type): the wider one's, a copy of the
    other (exact: upcasting loses nothing, and is what Liger's kernels do on load). Autograd
    carries the gradient back through the cast."""
    if a.dtype == b.dtype:
        return a, b
    common = torch.promote_types(a.dtype, b.dtype)
    return a.to(common), b.to(common)


def check_labels(op: str, labels, rows: int, device) -> Optional[torch.Tensor]:
    """shift_labels: None, or integer labels of shape (BT,) on the inputs' device (int64 returned)."""
    if labels is None:
        return None
    if not isinstance(labels, torch.Tensor):
        fail(op, f"shift_labels must be a torch.Tensor or None, got {type(labels).__name__}")
    if tuple(labels.shape) != (rows,):
        fail(op, f"the shape of shift_labels must be (BT,) = ({rows},). Got: {tuple(labels.shape)}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        fail(op, f"shift_labels must hold integer labels, got dtype {labels.dtype}")
    if labels.device != device:
        fail(op, f"shift_labels is on {labels.device} but the inputs are on {device}")
    return labels if labels.dtype == torch.int64 else labels.long()


def check_ignore_index(op: str, ignore_index) -> None:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        fail(op, f"ignore_index must be an int, got {ignore_index!r}")


def valid_count(labels: Optional[torch.Tensor], ignore_index: int) -> Optional[torch.Tensor]:
    """int64 [1] on the device: how many labels are not ignore_index (Liger's n_non_ignore,
    without its .item() host sync); None without labels (the kernels then count every row)."""
    if labels is None:
        return None
    return (labels != ignore_index).sum().reshape(1)


def scale_stored_grad_(grad: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    """grad *= grad_output (one element) in place, skipped on the device when it is exactly 1
    (cross_entropy_scale; no host sync, unlike Liger's torch.equal). Returns grad."""
    from ligerd.ops.cross_entropy import scale_
    return scale_(grad, grad_output)
