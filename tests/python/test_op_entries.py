"""The op entries (kernels/ops/<family>.toml) are the one declaration of every op, and what derives
from them agrees: the committed Python signatures (ligerd/_entries.py) are what the generator
writes, the reference executor has a handler for exactly the entries' ops and reads tensors by
their entry names, `_backend.call` refuses names an entry does not have, and the generator refuses
malformed entries. (The C++ side cannot disagree: the generated headers are the catalogue's
source, and an entry without its op's definition does not link.)"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import ligerd
from ligerd import _backend
from ligerd._entries import ENTRIES

ROOT = Path(__file__).resolve().parents[2]
GEN = ROOT / "cmake" / "op_entries.py"


def _generator():
    spec = importlib.util.spec_from_file_location("op_entries", GEN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_signatures_are_up_to_date():
    p = subprocess.run([sys.executable, str(GEN), "check", str(ROOT / "python_client/ligerd/_entries.py")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_every_entry_has_a_reference_and_nothing_else_does():
    torch = pytest.importorskip("torch", reason="torch is not installed")  # noqa: F841
    from ligerd.testing import ref_executor
    assert set(ref_executor.HANDLERS) == set(ENTRIES)


def test_the_reference_executor_checks_counts_and_names():
    pytest.importorskip("torch", reason="torch is not installed")
    from ligerd.testing.ref_executor import Args
    t = Args("rms_norm_fwd", ["X", "W", "Y", "RSTD"], [1, None, 3, 4])
    assert (t.X, t.W, t.RSTD) == (1, None, 4) and tuple(t) == (1, None, 3, 4)
    with pytest.raises(AttributeError, match="rms_norm_fwd: the entry has no 'dX'"):
        t.dX
    with pytest.raises(AssertionError, match="3 values for the entry's 4"):
        Args("rms_norm_fwd", ["X", "W", "Y", "RSTD"], [1, 2, 3])


def test_call_orders_named_arguments_as_the_entry(monkeypatch):
    seen = []
    monkeypatch.setattr(_backend, "_test_launcher", lambda op, t, s: seen.append((op, t, s)))
    _backend.call("rms_norm_fwd", RSTD="r", Y="y", X="x", eps=1e-6, casting_mode=0, offset=0.5)
    assert seen == [("rms_norm_fwd", ["x", None, "y", "r"], [1e-6, 0.5, 0])]


@pytest.mark.parametrize("kwargs,match", [
    (dict(X="x", Y="y", RSTD="r", eps=1e-6, offset=0.0, casting_mode=0, dX="d"), r"no argument\(s\) \['dX'\]"),
    (dict(X="x", Y="y", RSTD="r", eps=1e-6, offset=0.0), r"scalar 'casting_mode' not given"),
])
def test_call_refuses_what_the_entry_does_not_say(monkeypatch, kwargs, match):
    monkeypatch.setattr(_backend, "_test_launcher", lambda *a: pytest.fail("launched"))
    with pytest.raises(ligerd.OpInputError, match=match) as e:
        _backend.call("rms_norm_fwd", **kwargs)
    assert e.value.op == "rms_norm_fwd"
    with pytest.raises(ligerd.OpInputError, match="no such op"):
        _backend.call("rms_norm_sideways", X="x")


def test_entries_name_inputs_outputs_and_aliases():
    for op, (tensors, scalars) in ENTRIES.items():
        names = [t[0] for t in tensors]
        assert len(set(names)) == len(names), op
        assert any(t[1] == "output" for t in tensors), f"{op} writes nothing"
        for name, role, optional, alias in tensors:
            assert role in ("input", "output"), (op, name)
            assert not alias or (role == "output" and alias in names), (op, name)
        assert len(set(scalars)) == len(scalars), op


BAD = {
    "no op": "source = 'kernels/ops/rms_norm.cuh'\n",
    "bad role": "[[op]]\nname = 'x_fwd'\ndoc = 'd'\ntensors = [{ name = 'X', role = 'inout', dtypes = 'float', shape = 's' }]\n",
    "alias to a later tensor": ("[[op]]\nname = 'x_fwd'\ndoc = 'd'\ntensors = [\n"
                                "{ name = 'Y', role = 'output', dtypes = 'float', shape = 's', may_alias = 'X' },\n"
                                "{ name = 'X', role = 'input', dtypes = 'float', shape = 's' }]\n"),
    "odd launch bound": ("source = 'kernels/ops/rms_norm.cuh'\n[[op]]\nname = 'x_fwd'\ndoc = 'd'\n"
                         "tensors = [{ name = 'X', role = 'output', dtypes = 'float', shape = 's' }]\n"
                         "bounds = { i1 = 1000 }\n"),
    "bound the source never uses": ("source = 'kernels/ops/rms_norm.cuh'\n[[op]]\nname = 'x_fwd'\ndoc = 'd'\n"
                                    "tensors = [{ name = 'X', role = 'output', dtypes = 'float', shape = 's' }]\n"
                                    "bounds = { i9 = 1024 }\n"),
    "unknown dtype": ("[[op]]\nname = 'x_fwd'\ndoc = 'd'\n"
                      "tensors = [{ name = 'X', role = 'output', dtypes = ['float8'], shape = 's' }]\n"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_generator_refuses_malformed_entries(tmp_path, case):
    gen = _generator()
    (tmp_path / "family.toml").write_text(BAD[case])
    with pytest.raises(gen.EntryError):
        gen.load_families(tmp_path)


def test_generator_writes_a_header_per_family(tmp_path):
    p = subprocess.run([sys.executable, str(GEN), "cpp", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    families = {f.stem for f in (ROOT / "kernels/ops").glob("*.toml")}
    written = {f.stem for f in (tmp_path / "kernels/ops/entries").glob("*.h")}
    assert written == families | {"all_ops"}
    all_ops = (tmp_path / "kernels/ops/entries/all_ops.h").read_text()
    for op in ENTRIES:
        assert f"const OpSpec& OpSpec_{op}();" in all_ops
