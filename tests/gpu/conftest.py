"""GPU tests import the *built* ligerd package (installed, or <build>/python on PYTHONPATH), never
the source tree, which has no ligerd._C. The report header says which one was used."""

import pytest


def pytest_report_header(config):
    try:
        import torch
        import ligerd
        from ligerd import _backend
    except Exception as e:  # noqa: BLE001
        return [f"ligerd: not importable ({e})"]
    lines = [f"ligerd {ligerd.__version__} from {ligerd.__file__}",
             f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
             f"devices: {torch.cuda.device_count() if torch.cuda.is_available() else 0}"]
    if torch.cuda.is_available():
        lines.append(f"device 0: {torch.cuda.get_device_name(0)}")
        lines.append("ligerd._C: " + ("loaded" if _backend.extension_available() else
                                      "NOT AVAILABLE (every op test will fail)"))
    return lines


# ------------------------------------------------------------------------------------------
# Fixtures shared by the test modules (helpers they import are in ligerd/testing/gpu.py). Not autouse: a
# module asks for them with `pytestmark = pytest.mark.usefixtures(...)`, so modules that manage
# dispatch themselves (test_remote_dispatch.py, test_convergence.py) are left alone.


@pytest.fixture(scope="module")
def local_dispatch():
    """Dispatch pinned to local for the module: those tests are about the kernels through the
    local executor (remote dispatch has its own module, test_remote_dispatch.py, which checks it
    against this path bit for bit)."""
    import ligerd
    ligerd.set_dispatch_mode("local")
    yield
    ligerd.set_dispatch_mode(None)


@pytest.fixture(scope="module")
def no_tf32():
    """fp32 matmuls without TF32, so torch's fp32 GEMMs (the yardstick of the norm-wise
    tolerances) are true fp32, as cuBLASLt's CUBLAS_COMPUTE_32F. Not restored afterwards (as
    before this fixture existed: later modules ran with TF32 off too)."""
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
