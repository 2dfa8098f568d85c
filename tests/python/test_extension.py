"""ligerd._C on a machine without a GPU: it imports (no libcuda link), and its errors map to the
ligerd exception family naming the op. Needs a built extension: set LIGERD_BUILD_DIR to a CMake
build directory configured with -DLIGERD_BUILD_PYTHON=ON (tests/gpu/run.sh uses /tmp/b)."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")


def _load_extension():
    build = os.environ.get("LIGERD_BUILD_DIR", "").strip()
    if not build:
        pytest.skip("LIGERD_BUILD_DIR is not set (no built ligerd._C to test)")
    found = sorted(Path(build, "python", "ligerd").glob("_C*.so"))
    if not found:
        pytest.skip(f"no _C*.so under {build}/python/ligerd")
    import ligerd
    spec = importlib.util.spec_from_file_location("ligerd._C", found[-1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules["ligerd._C"] = mod
    ligerd._C = mod
    return mod


@pytest.fixture(scope="module")
def ext():
    return _load_extension()


def test_version(ext):
    import ligerd
    assert ext.version == ligerd.__version__


def test_cache_dir_roundtrip(ext, tmp_path):
    old = ext.cache_dir()
    ext.set_cache_dir(str(tmp_path))
    assert ext.cache_dir() == str(tmp_path)
    ext.set_cache_dir(old)


def test_cpu_tensor_is_op_input_error(ext):
    import ligerd
    with pytest.raises(ligerd.OpInputError) as ei:
        ext.launch("rms_norm_fwd", [torch.zeros(2, 3), None, torch.zeros(2, 3), torch.zeros(2)],
                   [1e-6, 0.0, 0.0])
    assert ei.value.op == "rms_norm_fwd" and "tensor #0" in str(ei.value) and "cpu" in str(ei.value)
    assert isinstance(ei.value, ValueError) and ei.value.code == 3


def test_no_tensor(ext):
    import ligerd
    with pytest.raises(ligerd.OpInputError, match="no CUDA tensor"):
        ext.launch("rms_norm_bwd", [None, None], [])


def test_remote_entry_points_exist(ext):
    for name in ("open_session", "remote_launch", "session_check", "close_session", "RemoteSession"):
        assert hasattr(ext, name), name


def test_open_session_without_gpu_or_daemon_is_a_clear_error(ext, tmp_path):
    import ligerd
    with pytest.raises(ligerd.LigerdError) as ei:
        ext.open_session(str(tmp_path / "none.sock"), 0, "remote", "test")
    # No GPU here: making the device current fails first (on a GPU machine: no daemon answers).
    assert ei.value.op == "open_session" and ("CUDA device 0" in str(ei.value) or "GetInfo" in str(ei.value))


def test_open_session_rejects_unknown_mode(ext, tmp_path):
    import ligerd
    with pytest.raises(ligerd.OpInputError, match="local, remote or auto"):
        ext.open_session(str(tmp_path / "none.sock"), 0, "sideways", "test")
