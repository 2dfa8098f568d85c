"""The benchmarks' results file (bench/ligerd_bench/results.py) and its plots
(bench/plot_results.py) on the CPU: rows appended to a temporary file read back with the right
columns, the header written once, each benchmark's rows converted (failed and missing peers are
rows saying so), the newest run chosen per row, the committed bench/results.csv well-formed, and
plot_results drawing a PNG per op from a file."""

from __future__ import annotations

import csv
import importlib
import sys
from pathlib import Path

import pytest

from ligerd.testing import by_path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"




by_path.load_bench(BENCH.parent)
results = importlib.import_module("ligerd_bench.results")
plot_results = by_path.load("plot_results", BENCH / "plot_results.py")

COLUMNS = ["op", "impl", "shape", "dtype", "pass", "ms", "GBps", "TFps", "pct_sol", "sol_kind",
           "peak_extra_MiB", "gpu", "torch", "liger", "ligerd_commit", "date", "note"]
META = {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu130", "liger": "0.8.2",
        "ligerd_commit": "abc1234", "date": "2026-11-23"}


def _kernel_run(ms_ligerd=0.0917):
    """run_kernels.py's rows as it makes them: one op, two passes, Liger failing on one."""
    rows = []
    for impl, ms, pct in (("eager", 1.012, 8.8), ("torch.compile", 0.093, 95.7), ("ligerd", ms_ligerd, 97.1)):
        for p in ("fwd", "full"):
            rows.append({"op": "rms_norm", "impl": impl, "shape": "M=16384 N=4096", "dtype": "bfloat16",
                         "pass": p, "method": "cuda-graph", "ms": ms, "GBps": 3000 * pct / 100,
                         "pct_copy_bw": pct, "peak_extra_MiB": 132.0 if p == "full" else None})
    rows.append({"op": "rms_norm", "impl": "liger", "shape": "M=16384 N=4096", "dtype": "bfloat16",
                 "pass": "fwd", "method": "failed", "ms": float("nan"), "GBps": float("nan"),
                 "note": "RuntimeError: boom"})
    return rows


def test_the_columns_are_the_issues():
    assert list(results.COLUMNS) == COLUMNS


def test_append_writes_the_header_once_and_reads_back(tmp_path):
    path = tmp_path / "results.csv"
    rows = results.kernel_rows(_kernel_run(), peers=("eager", "torch.compile", "liger", "ligerd"))
    assert results.record(rows, META, path=path, log=lambda *_: None) == path
    assert results.record(rows[:2], dict(META, date="2026-11-24"), path=path, note="second run",
                          log=lambda *_: None) == path
    with open(path, newline="") as f:
        raw = list(csv.reader(f))
    assert raw[0] == COLUMNS and sum(r == COLUMNS for r in raw) == 1
    back = results.read(path)
    assert len(back) == len(rows) + 2
    assert all(set(r) == set(COLUMNS) | {"_line"} for r in back)
    first = back[0]
    assert (first["op"], first["impl"], first["pass"], first["sol_kind"]) == ("rms_norm", "eager", "fwd", "copy_bw")
    assert first["ms"] == pytest.approx(1.012) and first["pct_sol"] == pytest.approx(8.8)
    assert {k: first[k] for k in META} == META
    assert back[-1]["date"] == "2026-11-24" and back[-1]["note"] == "second run"
    full = next(r for r in back if r["impl"] == "ligerd" and r["pass"] == "full")
    assert full["peak_extra_MiB"] == pytest.approx(132.0) and full["TFps"] is None


def test_failed_and_missing_peers_are_rows_saying_so():
    rows = results.kernel_rows(_kernel_run(), peers=("eager", "torch.compile", "liger", "ligerd"))
    failed = next(r for r in rows if r["impl"] == "liger" and r["pass"] == "fwd")
    assert failed["ms"] is None and failed["pct_sol"] is None
    assert failed["note"].startswith("failed") and "boom" in failed["note"]
    missing = next(r for r in rows if r["impl"] == "liger" and r["pass"] == "full")
    assert missing.get("ms") is None and missing["note"].startswith("not run")


def test_append_refuses_what_would_break_the_table(tmp_path):
    path = tmp_path / "results.csv"
    with pytest.raises(ValueError, match="unknown columns"):
        results.append([{"op": "x", "impl": "y", "pass": "fwd", "speedup": 2.0}], path)
    with pytest.raises(ValueError, match="op, impl and pass"):
        results.append([{"op": "x", "pass": "fwd"}], path)
    with pytest.raises(ValueError, match="sol_kind"):
        results.append([{"op": "x", "impl": "y", "pass": "fwd", "sol_kind": "hbm"}], path)
    other = tmp_path / "other.csv"
    other.write_text("op,impl,ms\nx,y,1\n")
    with pytest.raises(ValueError, match="has columns"):
        results.append([{"op": "x", "impl": "y", "pass": "fwd"}], other)
    assert results.record([{"op": "x", "impl": "y", "pass": "fwd"}], META, path=other,
                          log=lambda *_: None) is None  # reported, not raised


def test_newest_run_per_row():
    rows = [dict(op="a", impl="i", shape="s", dtype="d", **{"pass": "fwd"}, ms=1.0, date="2026-11-23", _line=0),
            dict(op="a", impl="i", shape="s", dtype="d", **{"pass": "fwd"}, ms=2.0, date="2026-11-25", _line=1),
            dict(op="a", impl="i", shape="s", dtype="d", **{"pass": "fwd"}, ms=3.0, date="2026-11-24", _line=2),
            dict(op="a", impl="i", shape="s", dtype="d", **{"pass": "bwd"}, ms=4.0, date="2026-11-23", _line=3),
            dict(op="a", impl="i", shape="s", dtype="d", **{"pass": "bwd"}, ms=5.0, date="2026-11-23", _line=4)]
    got = {r["pass"]: r["ms"] for r in results.newest(rows)}
    assert got == {"fwd": 2.0, "bwd": 5.0}  # latest date; on the same date, appended later


def test_flce_and_e2e_rows():
    flce = results.flce_rows([
        {"impl": "ligerd", "M": 8192, "D": 4096, "V": 128256, "ms": 41.65, "ms_busy_start": 37.27,
         "pct_gemm": 78.5, "pct_gemm_busy_start": 87.8, "peak_extra_MiB": 192.0, "pct_logits": 9.6},
        {"impl": "liger", "M": 8192, "D": 4096, "V": 128256, "ms": float("nan"),
         "note": "ModuleNotFoundError: No module named 'liger_kernel'"}])
    full, busy, liger = flce
    assert (full["pass"], full["sol_kind"], full["shape"]) == ("full", "gemm", "M=8192 D=4096 V=128256")
    assert full["TFps"] == pytest.approx(6 * 8192 * 4096 * 128256 / 41.65e-3 / 1e12)
    assert busy["pass"] == "full_busy_start" and busy["pct_sol"] == 87.8
    assert liger.get("ms") is None
    assert liger["note"].startswith("failed: ModuleNotFoundError")
    e2e = results.e2e_rows({
        "hf": {"rows": [{"batch": 1, "seq": 4096, "status": "ok", "tokens_per_s": 40850.0,
                         "step_ms": 100.3, "peak_gib": 19.54},
                        {"batch": 8, "seq": 4096, "status": "oom"}], "error": ""},
        "liger": {"rows": [], "error": "ImportError: no liger"}}, "1b", "bfloat16")
    ok, oom, failed = e2e
    assert (ok["op"], ok["pass"], ok["shape"]) == ("e2e", "train", "llama-3.2-1b B=1 S=4096")
    assert ok["ms"] == 100.3 and ok["peak_extra_MiB"] == pytest.approx(19.54 * 1024)
    assert "40,850 tokens/s" in ok["note"]
    assert oom["note"] == "out of memory" and failed["note"] == "failed: ImportError: no liger"


def test_run_metadata(monkeypatch):
    monkeypatch.setenv("LIGERD_COMMIT", "feed123")
    m = results.run_metadata({"device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "liger_kernel": None},
                             date="2026-01-02")
    assert m == {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "liger": "", "ligerd_commit": "feed123",
                 "date": "2026-01-02"}
    monkeypatch.delenv("LIGERD_COMMIT")
    if (ROOT / ".git").exists():
        assert results.git_commit()  # `git rev-parse --short HEAD` of this checkout


def test_the_committed_results_file_is_well_formed():
    rows = results.read(ROOT / "bench" / "results.csv")
    ops = {r["op"] for r in rows}
    assert {"rms_norm", "fused_add_rms_norm", "layer_norm", "swiglu", "geglu", "rope", "cross_entropy",
            "fused_linear_cross_entropy", "e2e"} <= ops
    for r in rows:
        assert r["gpu"] and r["torch"] and r["date"] and r["impl"] and r["pass"], r
        assert r["sol_kind"] in ("copy_bw", "gemm", "")
        assert r["ms"] is not None or r["note"], f"a row without a time says why: {r}"


def test_plot_results_draws_one_png_per_op(tmp_path, capsys):
    path = tmp_path / "results.csv"
    results.record(results.kernel_rows(_kernel_run(), peers=("eager", "torch.compile", "liger", "ligerd")),
                   META, path=path, log=lambda *_: None)
    results.record(results.kernel_rows(_kernel_run(ms_ligerd=0.05)), dict(META, date="2026-12-01"),
                   path=path, log=lambda *_: None)
    results.record(results.e2e_rows({"hf": {"rows": [{"batch": 1, "seq": 8, "status": "ok", "tokens_per_s": 1.0,
                                                      "step_ms": 8.0, "peak_gib": 0.1},
                                                     {"batch": 2, "seq": 8, "status": "oom"}]}},
                                    "tiny", "float32"), META, path=path, log=lambda *_: None)
    out = tmp_path / "plots"
    argv = ["--results", str(path), "--out", str(out)]
    try:
        import matplotlib  # noqa: F401  (scripts/test-requirements.txt installs it)
    except ImportError:
        with pytest.raises(SystemExit):
            plot_results.main(argv)
        assert "matplotlib is needed" in capsys.readouterr().err
        return
    written = plot_results.main(argv)
    assert sorted(p.name for p in written) == ["e2e.png", "rms_norm.png"]
    for p in written:
        assert p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size > 10_000
    assert plot_results.main(argv + ["--ops", "rope"]) == []
