"""The cold-start benchmark (bench/cold_start.py) on the CPU: command line, the stage breakdown,
ligerd's share and the report with fake measurements, the results-file rows (a failed phase is a
row saying so), the precompile row with a stand-in binary, the no-GPU exit, and a whole run of
the phases in fresh processes on a tiny model with a stand-in patch."""

import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "cold_start.py"


def _load():
    spec = importlib.util.spec_from_file_location("cold_start", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


cs = _load()


def _have(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def test_cli():
    a = cs.parse_args(["--ligerd-bin", ""])
    assert a.phases == ["hf", "ligerd-cold", "ligerd-warm"] and (a.batch, a.seq, a.model) == (1, 4096, "1b")
    b = cs.parse_args(["--ligerd-bin", "/x/ligerd"])
    assert b.phases == ["hf", "ligerd-cold", "ligerd-warm", "ligerd-precompiled"]
    for bad in (["--phases", "ligerd-precompiled", "--ligerd-bin", ""], ["--batch", "0"], ["--phases", "x"]):
        with pytest.raises(SystemExit) as e:
            cs.parse_args(bad)
        assert e.value.code == 2


def test_breakdown():
    marks = {"start": 100.0, "exec": 100.1, "imports": 104.0, "patch": 104.5, "model": 107.0,
             "first_step": 130.0, "second_step": 130.4}
    b = cs.breakdown(marks)
    assert b["imports_s"] == pytest.approx(4.0) and b["patch_s"] == pytest.approx(0.5)
    assert b["model_s"] == pytest.approx(2.5) and b["first_step_s"] == pytest.approx(23.0)
    assert b["second_step_s"] == pytest.approx(0.4) and b["to_first_step_s"] == pytest.approx(30.0)
    partial = cs.breakdown({"start": 1.0, "imports": 2.0})
    assert partial["imports_s"] == 1.0 and partial["first_step_s"] is None and partial["to_first_step_s"] is None


def _phase(name, marks, jit=None, error=""):
    r = {"phase": name, "label": cs.PHASES[name]["label"], "error": error, "marks": marks, "jit": jit}
    r.update(cs.breakdown(marks))
    return r


def _fake_results():
    base = {"start": 0.0, "imports": 6.0, "patch": 6.4, "model": 9.0}
    return {
        "precompile": {"phase": "precompile", "label": "ligerd --precompile_arch=sm_90", "error": "",
                       "wall_s": 70.2, "variants": 114, "compiled": 114, "seconds": 69.9, "threads": 16},
        "hf": _phase("hf", dict(base, patch=6.0, first_step=11.5, second_step=11.9)),
        "ligerd-cold": _phase("ligerd-cold", dict(base, first_step=52.0, second_step=52.35),
                              jit={"compiles": 17, "compile_seconds": 40.5, "disk_hits": 0, "misses": 17}),
        "ligerd-warm": _phase("ligerd-warm", dict(base, first_step=10.9, second_step=11.25),
                              jit={"compiles": 0, "compile_seconds": 0.0, "disk_hits": 17, "misses": 0}),
    }


def test_share_and_report():
    results = _fake_results()
    share = cs.ligerd_share(results)
    assert share["jit_compile_s"] == 40.5 and share["jit_compiles"] == 17
    assert share["cold_minus_warm_first_step_s"] == pytest.approx(43.0 - 1.9)
    assert share["cold_minus_hf_to_first_step_s"] == pytest.approx(52.0 - 11.5)
    report = cs.format_report(results, share)
    lines = report.splitlines()
    cold = next(l for l in lines if l.startswith("ligerd, empty cache"))
    assert " 52.0 " in cold and " 43.00 " in cold and " 17 " in cold and cold.endswith("40.5")
    pre = next(l for l in lines if l.startswith("ligerd --precompile_arch=sm_90"))
    assert "114 variants, 114 compiled" in pre and " 70.2 " in pre
    assert "NVRTC 40.5 s in the first step (17 variants)" in report and "under 5 s" in report
    # a failed phase: its row says so, the share is unknown where it needed it
    results["ligerd-warm"] = _phase("ligerd-warm", {"start": 0.0}, error="LigerdError: no GPU")
    share = cs.ligerd_share(results)
    assert share["cold_minus_warm_first_step_s"] is None and share["jit_compile_s"] == 40.5
    report = cs.format_report(results, share)
    assert "ligerd, warm cache failed: LigerdError: no GPU" in report
    assert next(l for l in report.splitlines() if l.startswith("ligerd, warm cache ")).split()[3] == "failed"


def test_result_rows():
    results = _fake_results()
    results["ligerd-warm"]["error"] = "timed out after 600 s"
    rows = {(r["impl"], r["pass"]): r for r in cs.result_rows(results, "1b", 1, 4096, "bfloat16")}
    assert set(rows) == {("ligerd", "precompile"), ("hf", "first_step"), ("ligerd-cold", "first_step"),
                         ("ligerd-warm", "first_step")}
    cold = rows[("ligerd-cold", "first_step")]
    assert cold["op"] == "cold_start" and cold["shape"] == "llama-3.2-1b B=1 S=4096" and cold["ms"] == pytest.approx(52000)
    assert "JIT: 17 compiles, 40.5 s NVRTC, 0 disk hits" in cold["note"] and "first step 43.00 s" in cold["note"]
    assert rows[("ligerd-warm", "first_step")]["note"] == "failed: timed out after 600 s"
    assert "ms" not in rows[("ligerd-warm", "first_step")]
    pre = rows[("ligerd", "precompile")]
    assert pre["shape"] == "--precompile_arch=sm_90" and pre["ms"] == pytest.approx(70200)
    # the results file takes them (its columns, op/impl/pass present)
    spec = importlib.util.spec_from_file_location("results_file", ROOT / "bench" / "ligerd_bench" / "results.py")
    rf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rf)
    for r in rows.values():
        assert set(r) <= set(rf.COLUMNS)


def _fake_ligerd(tmp_path, rc=0):
    """A stand-in for `ligerd --precompile_arch`: prints the real binary's summary line."""
    exe = tmp_path / "fake_ligerd"
    exe.write_text("#!/bin/sh\n"
                   "echo \"precompiled 114 kernel variants for sm_90 into $2: 114 compiled, 0 already cached, "
                   f"0 failed, 0 not stored, 1.5 s\"\nexit {rc}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_precompile_line_is_the_binary_s():
    """The parsed line is the one server/kernel_catalogue.cc prints."""
    src = (ROOT / "server" / "kernel_catalogue.cc").read_text()
    assert '"precompiled %zu kernel variants for %s into %s: %zu compiled, %zu already cached, %zu failed, "' in src
    assert '"%zu not stored, %.1f s\\n"' in src


def test_run_precompile(tmp_path):
    r = cs.run_precompile(str(_fake_ligerd(tmp_path)), "sm_90", str(tmp_path / "c"), 60)
    assert r["error"] == "" and (r["variants"], r["compiled"], r["failed"], r["seconds"]) == (114, 114, 0, 1.5)
    bad = cs.run_precompile(str(_fake_ligerd(tmp_path, rc=1)), "sm_90", str(tmp_path / "c"), 60)
    assert bad["error"].startswith("exit 1")
    missing = cs.run_precompile(str(tmp_path / "nope"), "sm_90", str(tmp_path / "c"), 60)
    assert missing["error"]


def test_no_gpu_runs_the_precompile_and_exits_2(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    p = subprocess.run([sys.executable, str(SCRIPT), "--ligerd-bin", str(_fake_ligerd(tmp_path)), "--arch", "sm_90",
                        "--out", str(tmp_path / "o"), "--results", "none"], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "a CUDA GPU is needed" in p.stderr
    if _have("torch"):
        assert "114 variants, 114 compiled" in p.stdout


@pytest.mark.skipif(not (_have("torch") and _have("transformers")), reason="torch and transformers are needed")
def test_phases_in_fresh_processes_on_the_cpu(tmp_path):
    """hf, ligerd-cold and ligerd-warm, each a fresh process, on a tiny model on the CPU with a
    stand-in patch (ligerd's ops need a GPU): the time marks, the report and the results rows."""
    (tmp_path / "fake_cold_patch.py").write_text("CALLS = []\n\ndef apply():\n    CALLS.append(1)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    results = tmp_path / "results.csv"
    p = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--model", "tiny", "--seq", "16",
                        "--batch", "2", "--patch", "fake_cold_patch:apply", "--out", str(tmp_path / "o"),
                        "--results", str(results), "--ligerd-bin", ""],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    data = json.loads((tmp_path / "o" / "cold_start.json").read_text())
    r = data["results"]
    assert list(r) == ["hf", "ligerd-cold", "ligerd-warm"]
    for phase in r.values():
        assert phase["error"] == "" and phase["to_first_step_s"] >= phase["first_step_s"] > 0
        assert phase["imports_s"] > 0 and phase["second_step_s"] > 0
        assert phase["jit"] is None  # the stand-in patch loads no ligerd
    assert r["ligerd-cold"]["cache_dir"] == r["ligerd-warm"]["cache_dir"] and r["hf"]["cache_dir"] is None
    assert not Path(r["ligerd-cold"]["cache_dir"]).exists()  # removed at the end
    assert "Cold start: seconds from a fresh process" in p.stdout
    lines = results.read_text().splitlines()
    assert lines[0].startswith("op,impl,shape") and len(lines) == 4
    assert all(l.startswith("cold_start,") for l in lines[1:])
