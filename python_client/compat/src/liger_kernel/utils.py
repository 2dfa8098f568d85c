"""``liger_kernel.utils``: Liger's device and package helpers (Axolotl imports PEFT_AVAILABLE and
is_npu_available); the ones that are not kernels are real, the rest stand-ins."""

import importlib.util

from liger_kernel import _shim


def is_peft_available() -> bool:
    return importlib.util.find_spec("peft") is not None


PEFT_AVAILABLE = is_peft_available()


def infer_device() -> str:
    """"cuda", "npu", "xpu" or "cpu": the accelerator torch sees."""
    import torch
    if torch.cuda.is_available():
        return "cuda"
    if is_npu_available():
        return "npu"
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return "xpu"
    return "cpu"


def is_npu_available() -> bool:
    """Whether an Ascend NPU is usable (torch_npu installed and a device seen)."""
    if importlib.util.find_spec("torch_npu") is None:
        return False
    import torch
    return hasattr(torch, "npu") and torch.npu.is_available()


__getattr__, __dir__ = _shim.delegating_module(globals(), None, (
    "infer_comm_backend", "infer_device_arch", "transformers_version_dispatch",
    "get_total_gpu_memory"))
