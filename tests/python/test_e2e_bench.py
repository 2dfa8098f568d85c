"""The end-to-end benchmark (bench/e2e/run_e2e.py) on the CPU: command line, the batch search and
its bisection, the ratios and the report against the issue's targets with fake measurements (the
Liger and HF numbers are the H100 ones in shared/reference/measured-anchors.md), the outputs, the
no-GPU exit, and one configuration's process logic on a tiny model (including an out-of-memory)."""

import csv
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "e2e" / "run_e2e.py"


def _load():
    spec = importlib.util.spec_from_file_location("run_e2e", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


e2e = _load()


def _have(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def test_cli_defaults_and_quick():
    a = e2e.parse_args([])
    assert a.configs == ["hf", "liger", "ligerd-local", "ligerd-remote", "ligerd-sliced", "hf-compile",
                         "liger-compile", "ligerd-compile", "ligerd-cudagraph"]
    assert a.fullgraph == "auto" and a.compile_backend == "inductor"
    assert (a.seq, a.equal_batches, a.warmup, a.steps, a.refine, a.model) == (4096, [1, 2], 2, 4, 1, "1b")
    assert a.out.endswith(os.path.join("", "e2e"))
    q = e2e.parse_args(["--quick", "--configs", "hf", "ligerd-remote"])
    assert (q.warmup, q.steps, q.refine, q.configs) == (1, 2, 0, ["hf", "ligerd-remote"])
    p = e2e.parse_args(["--patch", "liger=m:f"])
    assert p.patches == {"liger": "m:f"}


@pytest.mark.parametrize("argv", [["--configs", "deepspeed"], ["--patch", "liger"],
                                  ["--patch", "nope=m:f"], ["--equal-batches", "0"],
                                  ["--steps", "0"], ["--refine", "-1"], ["--fullgraph", "maybe"],
                                  ["--configs", "ligerd-compile", "hf-cudagraph"]])
def test_cli_rejects(argv):
    with pytest.raises(SystemExit) as e:
        e2e.parse_args(argv)
    assert e.value.code == 2


def test_model_is_llama_3_2_1b_shaped():
    m = e2e.MODELS["1b"]
    assert m["vocab"] == 128256 and m["tie"] is True
    assert m["dims"] == dict(hidden=2048, layers=16, heads=32, kv_heads=8, ffn=8192)
    assert e2e.CONFIGS["ligerd-remote"]["env"] == {"LIGERD_DISPATCH": "remote"}
    assert e2e.CONFIGS["ligerd-local"]["env"] == {"LIGERD_DISPATCH": "local"}
    assert e2e.CONFIGS["liger"]["patch"] == "liger_kernel.transformers:apply_liger_kernel_to_llama"
    assert e2e.CONFIGS["hf"]["patch"] is None


def test_batches_tried():
    assert e2e.search_batches([1, 2], 64) == [1, 2, 4, 8, 16, 32, 64]
    assert e2e.search_batches([1, 2], 20) == [1, 2, 4, 8, 16]
    assert e2e.search_batches([3], 12) == [3, 6, 12]
    assert e2e.search_batches([1, 2], 64, search=False) == [1, 2]


def test_largest_fit():
    rows = [{"batch": 1, "status": "ok"}, {"batch": 2, "status": "ok"}, {"batch": 4, "status": "oom"},
            {"batch": 3, "status": "ok"}]
    assert e2e.largest_fit(rows) == (3, 4)
    assert e2e.largest_fit([{"batch": 1, "status": "oom"}]) == (None, 1)
    assert e2e.largest_fit([{"batch": 8, "status": "ok"}]) == (8, None)


def test_is_oom():
    assert e2e.is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not e2e.is_oom(RuntimeError("CUDA error: an illegal memory access was encountered"))
    if _have("torch"):
        import torch
        assert e2e.is_oom(torch.cuda.OutOfMemoryError("x"))


# --------------------------------------------------------------------------------------------
# Bisection of the largest batch, with the processes replaced

def test_refinement_bisects_between_fit_and_oom(monkeypatch):
    calls = []
    limit = 6  # the fake GPU fits batches up to 6

    def fake_child(args, name, batches, out, tag):
        calls.append((tag, list(batches)))
        rows = []
        for b in batches:
            if b > limit:
                rows.append({"config": name, "batch": b, "status": "oom"})
                break
            rows.append({"config": name, "batch": b, "status": "ok", "tokens_per_s": 1000.0 * b,
                         "peak_gib": 5.0 * b})
        return {"config": name, "rows": rows, "error": "", "dispatch": "", "params": 1}

    monkeypatch.setattr(e2e, "run_child", fake_child)
    args = e2e.parse_args(["--refine", "3"])
    res = e2e.run_config(args, "hf", Path("unused"))
    # the process tries every batch up to --max-batch and stops itself at the first OOM (8)
    assert calls == [("main", [1, 2, 4, 8, 16, 32, 64]), ("refine0", [6]), ("refine1", [7])]
    assert (res["max_batch"], res["first_oom"]) == (6, 7)
    calls.clear()
    res = e2e.run_config(e2e.parse_args(["--quick"]), "hf", Path("unused"))  # no refinement
    assert calls == [("main", [1, 2, 4, 8, 16, 32, 64])] and res["max_batch"] == 4
    calls.clear()
    res = e2e.run_config(e2e.parse_args(["--no-search"]), "hf", Path("unused"))
    assert calls == [("main", [1, 2])] and (res["max_batch"], res["first_oom"]) == (2, None)


# --------------------------------------------------------------------------------------------
# Ratios and the report, with the H100 anchors for HF and Liger and a fake ligerd

def _cfg(name, points, oom_at=None, error=""):
    rows = [{"config": name, "batch": b, "seq": 4096, "status": "ok", "tokens_per_s": t * 1e3,
             "step_ms": b * 4096 / (t * 1e3) * 1e3, "peak_gib": g, "loss": 11.9}
            for b, (t, g) in sorted(points.items())]
    if oom_at:
        rows.append({"config": name, "batch": oom_at, "seq": 4096, "status": "oom"})
    fit, bad = e2e.largest_fit(rows)
    return {"config": name, "label": e2e.CONFIGS[name]["label"], "rows": rows, "error": error,
            "dispatch": "remote (MPS active)" if name == "ligerd-remote" else "", "params": 1_235_814_400,
            "max_batch": fit, "first_oom": bad, "searched_to": 64}


def _anchored_results():
    return {
        "hf": _cfg("hf", {1: (36.3, 20.5), 2: (40.7, 34.1), 4: (43.8, 61.2)}, oom_at=8),
        "liger": _cfg("liger", {1: (25.4, 13.8), 2: (38.9, 18.6), 4: (49.5, 28.3), 8: (56.0, 47.6)},
                      oom_at=16),
        "ligerd-local": _cfg("ligerd-local", {1: (44.0, 12.0), 2: (50.0, 17.0), 4: (55.0, 26.0),
                                              8: (60.0, 44.0), 16: (62.0, 78.0)}, oom_at=32),
        "ligerd-remote": _cfg("ligerd-remote", {1: (30.0, 12.5), 2: (40.0, 22.0), 4: (45.0, 30.0)},
                              oom_at=8),
    }


def test_summary_ratios():
    s = {x["config"]: x for x in e2e.summarize(_anchored_results(), [1, 2])}
    loc, rem, lig = s["ligerd-local"], s["ligerd-remote"], s["liger"]
    assert (loc["max_batch"], loc["first_oom"], loc["tok_s_at_max"]) == (16, 32, 62000.0)
    assert loc["tok_s_vs_hf"] == pytest.approx(62.0 / 43.8)       # each at its largest batch
    assert loc["tok_s_vs_liger"] == pytest.approx(62.0 / 56.0)
    assert loc["eq_batch_vs_hf"] == 2 and loc["eq_batch_vs_liger"] == 2
    assert loc["eq_tok_s_vs_hf"] == pytest.approx(50.0 / 40.7)
    assert loc["eq_mem_vs_hf"] == pytest.approx(17.0 / 34.1)
    assert loc["eq_mem_vs_liger"] == pytest.approx(17.0 / 18.6)
    assert loc["max_batch_vs_hf"] == pytest.approx(4.0)
    assert rem["max_batch_vs_hf"] == pytest.approx(1.0)
    assert lig["max_batch_vs_hf"] == pytest.approx(2.0) and "tok_s_vs_liger" not in lig
    assert "tok_s_vs_hf" not in s["hf"]
    assert s["hf"]["tok_s_b1"] == 36300.0 and s["hf"]["peak_gib_b2"] == 34.1


def test_equal_batch_falls_back_when_a_config_did_not_fit():
    r = _anchored_results()
    r["hf"] = _cfg("hf", {1: (36.3, 20.5)}, oom_at=2)
    s = {x["config"]: x for x in e2e.summarize(r, [1, 2])}
    assert s["ligerd-local"]["eq_batch_vs_hf"] == 1 and s["ligerd-local"]["eq_batch_vs_liger"] == 2
    assert s["ligerd-local"]["eq_mem_vs_hf"] == pytest.approx(12.0 / 20.5)


def test_targets():
    assert e2e.meets("tok_s_vs_hf", 1.2) == "yes" and e2e.meets("tok_s_vs_hf", 1.19) == "NO"
    assert e2e.meets("tok_s_vs_liger", 1.15) == "yes" and e2e.meets("tok_s_vs_liger", 1.14) == "NO"
    assert e2e.meets("tok_s_vs_hfc", 1.0) == "yes" and e2e.meets("tok_s_vs_hfc", 0.99) == "NO"
    assert e2e.meets("eq_mem_vs_hfc", 1.0) == "yes" and e2e.meets("eq_mem_vs_hfc", 1.01) == "NO"
    assert e2e.meets("eq_mem_vs_hf", 0.6) == "yes" and e2e.meets("eq_mem_vs_hf", 0.61) == "NO"
    assert e2e.meets("max_batch_vs_hf", 2.0) == "yes" and e2e.meets("max_batch_vs_hf", 1.5) == "NO"
    assert e2e.meets("eq_mem_vs_liger", 1.0) == "yes" and e2e.meets("tok_s_vs_liger", None) == ""


def test_report_prints_ratios_beside_targets():
    results = _anchored_results()
    report = e2e.format_report(results, e2e.summarize(results, [1, 2]), [1, 2], 4096)
    lines = report.splitlines()
    first = next(l for l in lines if l.startswith("HF eager"))
    assert "36.3K tok/s, 20.5 GiB" in first and "40.7K tok/s, 34.1 GiB" in first and " 4 " in first
    assert "43,800" in first
    header = next(l for l in lines if l.startswith("ratio"))
    assert header.index("HF + Liger-Kernel") < header.index("HF + ligerd local") < header.index("HF + ligerd remote")
    row = {l.split("  ")[0]: l for l in lines}
    mem = row["peak memory vs HF eager at equal batch"]
    assert ">= " not in mem and "<= 0.6" in mem
    assert f"{17.0 / 34.1:.2f}x yes" in mem and f"{22.0 / 34.1:.2f}x NO" in mem
    assert f"{18.6 / 34.1:.2f}x" in mem  # Liger's ratio shown, not judged
    big = row["largest batch vs HF eager"]
    assert ">= 2" in big and "4.00x yes" in big and "1.00x NO" in big and "2.00x" in big
    thr = row["tokens/s vs Liger (each at its largest batch)"]
    assert ">= 1.15" in thr  # issue 20's target
    assert f"{62.0 / 56.0:.2f}x NO" in thr and f"{45.0 / 56.0:.2f}x NO" in thr
    assert "HF + ligerd remote dispatch: remote (MPS active)" in report
    assert "equal batch = 2" in report


def test_report_names_failures():
    results = _anchored_results()
    results["ligerd-local"] = _cfg("ligerd-local", {}, error="ImportError: cannot import name "
                                   "'apply_liger_kernel_to_llama' from 'ligerd.transformers'")
    report = e2e.format_report(results, e2e.summarize(results, [1, 2]), [1, 2], 4096)
    assert "HF + ligerd local failed: ImportError" in report
    local_row = next(l for l in report.splitlines() if l.startswith("HF + ligerd local "))
    assert "failed" in local_row


def test_outputs(tmp_path):
    results = _anchored_results()
    summary = e2e.summarize(results, [1, 2])
    written = e2e.write_outputs(results, summary, tmp_path, {"seq": 4096, "title": "t", "gpu_gib": 79.2})
    rows = list(csv.DictReader(open(tmp_path / "e2e.csv")))
    assert len(rows) == sum(len(r["rows"]) for r in results.values())
    hf8 = next(r for r in rows if r["config"] == "hf" and r["batch"] == "8")
    assert hf8["status"] == "oom" and hf8["tokens_per_s"] == ""
    srows = {r["config"]: r for r in csv.DictReader(open(tmp_path / "e2e_summary.csv"))}
    assert srows["ligerd-local"]["max_batch"] == "16" and srows["ligerd-local"]["max_batch_vs_hf"] == "4"
    data = json.loads((tmp_path / "e2e.json").read_text())
    assert set(data["results"]) == set(results) and "eq_mem_vs_hf" in data["targets"]
    if _have("matplotlib"):
        assert (tmp_path / "e2e.png") in written
        assert (tmp_path / "e2e.png").read_bytes()[:4] == b"\x89PNG"


def test_no_gpu_exits_2(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    p = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path / "o")], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "run_e2e: cannot run:" in p.stderr
    assert ("no CUDA GPU" in p.stderr) or ("PyTorch is not installed" in p.stderr)


# --------------------------------------------------------------------------------------------
# One configuration's process, in this process, on a tiny model on the CPU

@pytest.mark.skipif(not (_have("torch") and _have("transformers")), reason="torch and transformers are needed")
def test_worker_measures_batches_and_stops_at_oom(tmp_path, monkeypatch):
    import torch
    from transformers import LlamaForCausalLM
    fake = types.ModuleType("fake_oom_patch")

    def apply():
        real = LlamaForCausalLM.forward

        def forward(self, input_ids=None, **kw):
            if input_ids.shape[0] >= 4:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
            return real(self, input_ids=input_ids, **kw)
        monkeypatch.setattr(LlamaForCausalLM, "forward", forward)
    fake.apply = apply
    monkeypatch.setitem(sys.modules, "fake_oom_patch", fake)
    result = tmp_path / "w.json"
    args = e2e.parse_args(["--worker", "liger", "--model", "tiny", "--device", "cpu", "--seq", "16",
                           "--batches", "1", "2", "4", "8", "--warmup", "1", "--steps", "1",
                           "--result", str(result), "--patch", "liger=fake_oom_patch:apply"])
    assert e2e.worker_main(args) == 0
    info = json.loads(result.read_text())
    assert [(r["batch"], r["status"]) for r in info["rows"]] == [(1, "ok"), (2, "ok"), (4, "oom")]
    assert all(r["tokens_per_s"] > 0 and r["loss"] > 0 for r in info["rows"][:2])
    assert info["error"] == "" and info["params"] > 0


# --------------------------------------------------------------------------------------------
# Compiled configurations (issue 20): the table, the ratios against HF + torch.compile, the best
# ligerd configuration, failures as rows, and the compile logic on the CPU (aot_eager)

def test_compiled_configs_table():
    c = e2e.CONFIGS
    assert c["hf-compile"]["patch"] is None and c["hf-compile"]["compile"] == "default"
    assert c["liger-compile"]["patch"] == c["liger"]["patch"] and c["liger-compile"]["compile"] == "default"
    assert c["ligerd-compile"]["patch"] == c["ligerd-local"]["patch"]
    assert c["ligerd-compile"]["env"] == {"LIGERD_DISPATCH": "local"} and c["ligerd-compile"]["compile"] == "default"
    assert c["ligerd-cudagraph"]["compile"] == "reduce-overhead"
    assert all("compile" not in c[n] for n in ("hf", "liger", "ligerd-local", "ligerd-remote", "ligerd-sliced"))
    assert c["ligerd-sliced"]["patch"] == c["ligerd-local"]["patch"]
    assert c["ligerd-sliced"]["env"] == {"LIGERD_DISPATCH": "local", "LIGERD_FLCE_MODE": "sliced"}
    assert set(e2e.LIGERD_CONFIGS) == {"ligerd-local", "ligerd-remote", "ligerd-sliced", "ligerd-compile",
                                       "ligerd-cudagraph"}
    assert e2e.PEERS == {"hf": "hf", "liger": "liger", "hf-compile": "hfc"}
    assert e2e.COMPILE_WARMUP == {"default": 2, "reduce-overhead": 3}
    a = e2e.parse_args(["--fullgraph", "off", "--compile-backend", "aot_eager", "--configs", "hf-compile"])
    cmd = e2e.child_command(a, "hf-compile", [1, 2], Path("r.json"))
    assert cmd[cmd.index("--fullgraph") + 1] == "off" and cmd[cmd.index("--compile-backend") + 1] == "aot_eager"


def _compiled_results():
    r = _anchored_results()
    r["hf-compile"] = _cfg("hf-compile", {1: (40.0, 19.0), 2: (45.0, 31.0), 4: (48.5, 58.0)}, oom_at=8)
    r["liger-compile"] = _cfg("liger-compile", {}, error="Unsupported: call_function in skip_files")
    r["ligerd-compile"] = _cfg("ligerd-compile", {1: (47.0, 11.8), 2: (54.0, 16.5), 4: (60.0, 25.0),
                                                  8: (66.0, 42.0)}, oom_at=16)
    r["ligerd-cudagraph"] = _cfg("ligerd-cudagraph", {1: (52.0, 14.0)}, oom_at=2)
    for name, res in r.items():
        if e2e.CONFIGS[name].get("compile"):
            for row in res["rows"]:
                if row["status"] == "ok":
                    row.update(compile="mode=default, fullgraph", first_step_s=71.5, warmup_s=72.9,
                               warmup_steps=2)
    return r


def test_summary_against_hf_compile_and_best_ligerd():
    s = {x["config"]: x for x in e2e.summarize(_compiled_results(), [1, 2])}
    lc = s["ligerd-compile"]
    assert lc["tok_s_vs_hfc"] == pytest.approx(66.0 / 48.5)     # each at its largest batch (8 vs 4)
    assert lc["tok_s_vs_liger"] == pytest.approx(66.0 / 56.0)
    assert lc["eq_batch_vs_hfc"] == 2 and lc["eq_tok_s_vs_hfc"] == pytest.approx(54.0 / 45.0)
    assert lc["eq_mem_vs_hfc"] == pytest.approx(16.5 / 31.0)
    assert lc["compile"] == "mode=default, fullgraph" and s["ligerd-local"]["compile"] == ""
    assert s["hf-compile"]["tok_s_vs_hf"] == pytest.approx(48.5 / 43.8) and "tok_s_vs_hfc" not in s["hf-compile"]
    # the cudagraph run fit batch 1 only: its equal batch with HF + compile is 1
    assert s["ligerd-cudagraph"]["eq_batch_vs_hfc"] == 1
    assert s["ligerd-cudagraph"]["eq_mem_vs_hfc"] == pytest.approx(14.0 / 19.0)
    lf = s["liger-compile"]
    assert lf["max_batch"] is None and lf["tok_s_vs_hfc"] is None and lf["error"].startswith("Unsupported")
    best = e2e.best_ligerd(list(s.values()))
    assert best["config"] == "ligerd-compile"
    assert e2e.best_ligerd([s["hf"], s["liger"]]) is None


def test_report_with_compiled_configs():
    results = _compiled_results()
    report = e2e.format_report(results, e2e.summarize(results, [1, 2]), [1, 2], 4096)
    lines = report.splitlines()
    row = {l.split("  ")[0]: l for l in lines}
    thr = row["tokens/s vs HF + compile (each at its largest batch)"]
    assert ">= 1" in thr and f"{66.0 / 48.5:.2f}x yes" in thr and f"{62.0 / 48.5:.2f}x yes" in thr
    assert f"{52.0 / 48.5:.2f}x yes" in thr
    mem = row["peak memory vs HF + compile at equal batch"]
    assert f"{16.5 / 31.0:.2f}x yes" in mem
    failed = next(l for l in lines if l.startswith("HF + Liger + compile "))
    assert "failed" in failed
    assert "HF + Liger + compile failed: Unsupported" in report
    assert "HF + ligerd + compile compiled: mode=default, fullgraph; first step (compiling) 71.5 s, not timed" in report
    best = next(l for l in lines if l.startswith("Best ligerd configuration"))
    assert "HF + ligerd + compile, 66,000 tok/s at batch 8" in best
    assert f"liger {66.0 / 56.0:.2f}x (yes)" in best and f"hfc {66.0 / 48.5:.2f}x (yes)" in best
    # every configuration is a column of the ratio table, in CONFIGS order
    header = next(l for l in lines if l.startswith("ratio"))
    assert header.index("HF + torch.compile") < header.index("HF + Liger + compile") < \
        header.index("HF + ligerd + compile") < header.index("HF + ligerd + CUDA graphs")


def test_outputs_and_result_rows_of_compiled_configs(tmp_path):
    results = _compiled_results()
    summary = e2e.summarize(results, [1, 2])
    written = e2e.write_outputs(results, summary, tmp_path, {"seq": 4096, "title": "t"})
    rows = list(csv.DictReader(open(tmp_path / "e2e.csv")))
    lc = next(r for r in rows if r["config"] == "ligerd-compile" and r["batch"] == "8")
    assert lc["compile"] == "mode=default, fullgraph" and lc["first_step_s"] == "71.5" and lc["warmup_steps"] == "2"
    srows = {r["config"]: r for r in csv.DictReader(open(tmp_path / "e2e_summary.csv"))}
    assert srows["ligerd-compile"]["tok_s_vs_hfc"] == f"{66.0 / 48.5:.4g}"
    if _have("matplotlib"):
        assert (tmp_path / "e2e.png") in written
    spec = importlib.util.spec_from_file_location("results_file", ROOT / "bench" / "ligerd_bench" / "results.py")
    rf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rf)
    out = rf.e2e_rows(results, "1b", "bfloat16")
    by = {(r["impl"], r["shape"]): r for r in out}
    assert "torch.compile mode=default, fullgraph; first step 71.5 s (untimed)" in \
        by[("ligerd-compile", "llama-3.2-1b B=8 S=4096")]["note"]
    assert by[("liger-compile", "llama-3.2-1b")]["note"] == "failed: Unsupported: call_function in skip_files"
    assert "torch.compile" not in by[("hf", "llama-3.2-1b B=1 S=4096")]["note"]


def _graph_break_patch(monkeypatch, name):
    """A patch that puts a graph break in LlamaForCausalLM.forward (fullgraph=True fails on it)."""
    import torch
    from transformers import LlamaForCausalLM
    fake = types.ModuleType(name)

    def apply():
        real = LlamaForCausalLM.forward

        def forward(self, *a, **kw):
            torch._dynamo.graph_break()
            return real(self, *a, **kw)
        monkeypatch.setattr(LlamaForCausalLM, "forward", forward)
    fake.apply = apply
    monkeypatch.setitem(sys.modules, name, fake)


@pytest.mark.skipif(not (_have("torch") and _have("transformers")), reason="torch and transformers are needed")
def test_compiled_worker_falls_back_from_fullgraph(tmp_path, monkeypatch):
    """fullgraph=True fails on a graph break; auto compiles again with graph breaks allowed, times
    only the steps after the compiling ones, and the row says how it compiled."""
    import torch
    torch._dynamo.reset()
    _graph_break_patch(monkeypatch, "fake_graph_break")
    result = tmp_path / "w.json"
    args = e2e.parse_args(["--worker", "ligerd-compile", "--model", "tiny", "--device", "cpu", "--seq", "8",
                           "--batches", "2", "--warmup", "0", "--steps", "1", "--result", str(result),
                           "--compile-backend", "aot_eager", "--patch", "ligerd-compile=fake_graph_break:apply"])
    try:
        assert e2e.worker_main(args) == 0
    finally:
        torch._dynamo.reset()
    info = json.loads(result.read_text())
    (row,) = info["rows"]
    assert row["status"] == "ok" and row["warmup_steps"] == 2  # at least 2 though --warmup 0
    assert row["compile"].startswith("mode=default, ") and "graph breaks" in row["compile"]
    assert "fullgraph=True failed: " in row["compile"] and "the timed steps compiled" not in row["compile"]
    assert row["warmup_s"] >= row["first_step_s"] > 0 and row["tokens_per_s"] > 0


@pytest.mark.skipif(not (_have("torch") and _have("transformers")), reason="torch and transformers are needed")
def test_compiled_worker_failure_is_a_row(tmp_path, monkeypatch):
    """--fullgraph on with a graph break: the batch is an error row naming the failure, the
    process reports it (exit 1), nothing crashes."""
    import torch
    torch._dynamo.reset()
    _graph_break_patch(monkeypatch, "fake_graph_break2")
    result = tmp_path / "w.json"
    args = e2e.parse_args(["--worker", "hf-compile", "--model", "tiny", "--device", "cpu", "--seq", "8",
                           "--batches", "1", "2", "--steps", "1", "--result", str(result), "--fullgraph", "on",
                           "--compile-backend", "aot_eager", "--patch", "hf-compile=fake_graph_break2:apply"])
    try:
        assert e2e.worker_main(args) == 1
    finally:
        torch._dynamo.reset()
    info = json.loads(result.read_text())
    assert [(r["batch"], r["status"]) for r in info["rows"]] == [(1, "error")]
    assert info["rows"][0]["compile"] == "mode=default, fullgraph" and info["error"] == info["rows"][0]["error"]
    assert "graph_break" in info["error"] or "graph break" in info["error"].lower()


def test_merge_runs_split_over_calls(tmp_path, capsys):
    """Runs split to fit a time limit: --merge makes one report and summary from their e2e.json."""
    full = _compiled_results()
    a = {k: full[k] for k in ("hf", "liger", "hf-compile", "ligerd-local")}
    b = {k: full[k] for k in ("liger-compile", "ligerd-compile", "ligerd-cudagraph")}
    for name, part, eq in (("a", a, [1, 2]), ("b", b, [2, 1])):
        e2e.write_outputs(part, e2e.summarize(part, eq), tmp_path / name,
                          {"seq": 4096, "title": "t", "equal_batches": eq, "seconds": 300.0}, plot=False)
    rc = e2e.main(["--merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m"), "--no-plot"])
    assert rc == 1  # liger-compile failed
    out = capsys.readouterr().out
    assert "Best ligerd configuration: HF + ligerd + compile, 66,000 tok/s" in out
    data = json.loads((tmp_path / "m" / "e2e.json").read_text())
    assert list(data["results"]) == ["hf", "liger", "ligerd-local", "hf-compile", "liger-compile",
                                     "ligerd-compile", "ligerd-cudagraph"]
    assert data["meta"]["seconds"] == 600.0
    s = {x["config"]: x for x in data["summary"]}
    assert s["ligerd-compile"]["tok_s_vs_hfc"] == pytest.approx(66.0 / 48.5)


def test_every_liger_configuration_gets_the_peer_site():
    """liger-compile once ran without Liger-Kernel's peer site ("No module named 'liger_kernel'")."""
    wanted = {n for n, c in e2e.CONFIGS.items() if c["patch"] and e2e.needs_peer_site(c["patch"])}
    assert wanted == {"liger", "liger-compile"}
    assert not e2e.needs_peer_site("ligerd.transformers:apply_liger_kernel_to_llama")
