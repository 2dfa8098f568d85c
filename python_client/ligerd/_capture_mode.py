"""The CUDA stream-capture mode of ligerd's own background threads.

A CUDA graph captured in the "global" mode (``torch.cuda.graph``'s default) is invalidated when
any other thread of the process makes a potentially unsafe CUDA call during the capture, a
``cudaEventQuery`` included: the telemetry reporter (ligerd._telemetry), which reads the CUDA
events of its timed launches from its own thread every few seconds, would break a capture that
happens to be under way then. A thread that never captures can put itself in thread-local mode:
its calls then answer only to captures of its own. PyTorch does the same for its NCCL watchdog
(pytorch/pytorch#148594). The driver API is called directly (``libcuda``, which every CUDA process
has loaded), so no runtime context is created for the thread.
"""

from __future__ import annotations

import ctypes

_THREAD_LOCAL = 1  # CU_STREAM_CAPTURE_MODE_THREAD_LOCAL (cuda.h)


_exchange = None  # cuThreadExchangeStreamCaptureMode once looked up; False: no driver here


def use_thread_local_capture_mode() -> bool:
    """Puts the calling thread in thread-local capture mode. False where that is not possible
    (no CUDA driver; CUDA not initialised in this process yet, so no capture to break either):
    a caller that may touch CUDA later asks again."""
    global _exchange
    if _exchange is None:
        try:
            fn = ctypes.CDLL("libcuda.so.1").cuThreadExchangeStreamCaptureMode
            fn.argtypes = [ctypes.POINTER(ctypes.c_int)]
            fn.restype = ctypes.c_int
            _exchange = fn
        except (OSError, AttributeError):
            _exchange = False
    if _exchange is False:
        return False
    mode = ctypes.c_int(_THREAD_LOCAL)
    return _exchange(ctypes.byref(mode)) == 0
