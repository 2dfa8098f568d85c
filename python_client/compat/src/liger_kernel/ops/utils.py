"""``liger_kernel.ops.utils`` (Axolotl's own Triton kernels import helpers here): the small helpers
that are not kernels are real; the Triton ones are stand-ins."""

import functools
import importlib.metadata

from liger_kernel import _shim
from liger_kernel.utils import infer_device, is_npu_available  # noqa: F401  (as Liger's module)


def is_hip() -> bool:
    import torch
    return torch.version.hip is not None


def ensure_contiguous(fn):
    """Decorator: tensor arguments are made contiguous before ``fn`` runs."""
    @functools.wraps(fn)
    def wrapper(ctx, *args, **kwargs):
        import torch

        def c(x):
            return x.contiguous() if isinstance(x, torch.Tensor) else x
        return fn(ctx, *[c(a) for a in args], **{k: c(v) for k, v in kwargs.items()})
    return wrapper


def calculate_settings(n: int):
    """Triton block size (next power of two of ``n``, at most 65536) and warp count for it."""
    block = 1 << max(int(n) - 1, 0).bit_length()
    if block > 65536:
        raise RuntimeError(f"Cannot launch Triton kernel since n = {n} exceeds the recommended "
                           f"Triton blocksize = 65536.")
    warps = 32 if block >= 32768 else 16 if block >= 8192 else 8 if block >= 2048 else 4
    if warps == 32 and is_hip():
        warps = 16
    return block, warps


def compare_version(package: str, op, target: str) -> bool:
    """``op(installed version of package, target)``; False if the package is not installed."""
    from packaging.version import Version
    try:
        return op(Version(importlib.metadata.version(package)), Version(target))
    except importlib.metadata.PackageNotFoundError:
        return False


def _torch_to_triton_dtype():
    import torch
    import triton.language as tl
    return {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def __getattr__(name):
    if name == "torch_to_triton_dtype":
        try:
            value = _torch_to_triton_dtype()
        except ImportError:
            value = _shim.not_provided_function(__name__, name)
        globals()[name] = value
        return value
    return _getattr(name)


_getattr, __dir__ = _shim.delegating_module(globals(), None, (
    "device_context", "get_amp_custom_fwd_bwd", "element_mul_kernel", "get_npu_core_count",
    "set_large_grf_mode"))
