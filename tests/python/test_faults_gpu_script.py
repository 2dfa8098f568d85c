"""The GPU fault suite's script (tests/faults/faults_gpu.py) on the CPU: its table and exit rule
(the CPU suite's, tests/faults/faults_cpu.cc), the CSV/JSON rows, the /metrics parsing, the flat-
memory judgement, its exit 2 without a GPU; and its clients' op cases (tests/faults/
faults_gpu_ops.py) run on ligerd's float64 reference executor: correct results pass their
tolerances, a corrupted output is a silent result, the training job trains. The script's GPU rows
themselves run on a GPU machine (docs/node-service.md, "The fault suite")."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "faults" / "faults_gpu.py"
OPS = ROOT / "tests" / "faults" / "faults_gpu_ops.py"


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


fg = load("faults_gpu", SCRIPT)


def good_row(**kw):
    return fg.Row(**dict(dict(scenario="client SIGKILL mid-op (GPU)", unit="ms to drop", limit=1000, trials=3,
                              figure=12.5), **kw))


# ------------------------------------------------------------------------------------------
# the table

def test_table_has_the_cpu_suites_columns_and_marks_failed_rows():
    rows = [good_row(note="all fine"), good_row(hangs=1, note="one hung"),
            fg.Row("soak, 8 clients under MPS (GPU)", unit="ops/s", trials=1, figure=812.25, note="flat")]
    lines = fg.format_table(rows).splitlines()
    assert lines[0].split() == ["scenario", "trials", "crashes", "hangs", "silent", "failures", "figure",
                                "limit", "note"]
    assert "ms to drop <= 1000" in lines[1] and lines[1].rstrip().endswith("all fine")
    assert "FAILED: one hung" in lines[2] and "FAILED" not in lines[1]
    assert "812.2" in lines[3] and "ops/s" in lines[3] and "<=" not in lines[3]
    assert fg.summary_line(rows) == "faults: 2 passed, 1 failed"


@pytest.mark.parametrize("field,value", [("crashes", 1), ("hangs", 1), ("silent", 1), ("failures", 2),
                                         ("figure", 1000.5)])
def test_any_crash_hang_silent_failure_or_limit_fails_the_suite(field, value):
    bad = good_row()
    setattr(bad, field, value)
    assert not bad.ok()
    assert fg.exit_status([good_row(), bad]) == 1
    assert fg.exit_status([good_row(), good_row(figure=1000.0)]) == 0  # at the limit is within it


def test_no_limit_and_empty_table():
    assert fg.Row("soak", unit="ops/s", figure=1e9).ok()
    assert fg.exit_status([]) == 1  # nothing ran: not a pass


def test_rows_written_as_csv_and_json(tmp_path):
    rows = [good_row(note="a, b"), good_row(silent=2)]
    csv_path, json_path = fg.write_rows(rows, str(tmp_path / "out"))
    import csv
    with open(csv_path) as f:
        got = list(csv.DictReader(f))
    assert [r["scenario"] for r in got] == [rows[0].scenario] * 2
    assert got[0]["note"] == "a, b" and got[0]["ok"] == "True" and got[1]["silent"] == "2" and got[1]["ok"] == "False"
    data = json.loads(Path(json_path).read_text())
    assert data["passed"] is False and data["rows"][1]["silent"] == 2 and data["rows"][0]["limit"] == 1000


def test_options():
    a = fg.parse_args(["--rows", "soak, client_kill", "--soak-seconds", "30", "--clients", "3"])
    assert a.rows == ["soak", "client_kill"] and a.soak_seconds == 30 and a.clients == 3
    with pytest.raises(SystemExit):
        fg.parse_args(["--rows", "soak,nonsense"])
    with pytest.raises(SystemExit):
        fg.parse_args(["--clients", "1"])


# ------------------------------------------------------------------------------------------
# /metrics

EXPOSITION = """\
# HELP ligerd_sessions open sessions
# TYPE ligerd_sessions gauge
ligerd_sessions{dispatch="local"} 1
ligerd_sessions{dispatch="remote"} 7
# TYPE ligerd_ring_pending_records gauge
ligerd_ring_pending_records{job="a",session="12"} 3
ligerd_ring_pending_records{job="b",session="13"} 0
# TYPE ligerd_ring_capacity_records gauge
ligerd_ring_capacity_records{job="a",session="12"} 1024
# TYPE ligerd_gpu_memory_used_bytes gauge
ligerd_gpu_memory_used_bytes{gpu="0",UUID="GPU-a",modelName="H100",Hostname="n"} 1073741824
ligerd_gpu_memory_used_bytes{gpu="1",UUID="GPU-b",modelName="H100",Hostname="n"} 2147483648
# TYPE ligerd_gpu_process_memory_bytes gauge
ligerd_gpu_process_memory_bytes{gpu="0",UUID="GPU-a",modelName="H100",Hostname="n",pid="4242",job=""} 536870912
ligerd_gpu_process_memory_bytes{gpu="1",UUID="GPU-b",modelName="H100",Hostname="n",pid="4242",job=""} 1048576
ligerd_gpu_process_memory_bytes{gpu="0",UUID="GPU-a",modelName="H100",Hostname="n",pid="77",job="x"} 9
# TYPE ligerd_ops_total counter
ligerd_ops_total{op="rms_norm_fwd",direction="forward",dtype="bfloat16",dispatch="remote",job="a"} 5
"""


def test_sessions_rings_and_gpu_memory_from_metrics():
    pytest.importorskip("prometheus_client", reason="prometheus_client is not installed")
    s = fg.metric_samples(EXPOSITION)
    assert fg.sessions_open(s) == 8  # summed over dispatch labels
    assert fg.ring_series(s, 12) == 2 and fg.ring_series(s, "13") == 1
    assert fg.ring_series(s, 99) == 0
    assert fg.daemon_gpu_bytes(s, 4242) == (536870912 + 1048576, "the daemon's own (NVML per process)")
    total, why = fg.daemon_gpu_bytes(s, 5)  # not listed (MPS): the GPUs' total
    assert total == 3 * 1024 ** 3 and "total" in why
    assert fg.daemon_gpu_bytes(fg.metric_samples("# TYPE x gauge\nx 1\n"), 5)[0] is None
    assert fg.sessions_open([]) == 0


def canonical(samples):
    return sorted((n, tuple(sorted(labels.items())), v) for n, labels, v in samples)


def test_the_fallback_parser_agrees_with_prometheus_client():
    """simple_samples (used where prometheus_client is not installed) reads the same samples,
    escaped label values included."""
    parser = pytest.importorskip("prometheus_client.parser", reason="prometheus_client is not installed")
    text = EXPOSITION + 'ligerd_job_process_info{job="say \\"hi\\" \\\\ x",pid="1"} 1\n'
    ref = [(s.name, dict(s.labels), float(s.value)) for f in parser.text_string_to_metric_families(text)
           for s in f.samples]
    assert canonical(fg.simple_samples(text)) == canonical(ref)
    assert ('ligerd_job_process_info', (('job', 'say "hi" \\ x'), ('pid', '1')), 1.0) in canonical(ref)


def test_a_real_exposition_parses():
    """The daemon's own exposition code on a simulated node (tests/cpp/telemetry_exposition_main)."""
    pytest.importorskip("prometheus_client", reason="prometheus_client is not installed")
    from ligerd.testing import prometheus_text
    exe = prometheus_text.build_file("tests", "cpp", "telemetry_exposition_main")
    text = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    s = fg.metric_samples(text)
    assert canonical(fg.simple_samples(text)) == canonical(s)
    assert fg.sessions_open(s) >= 1
    sessions = {labels["session"] for n, labels, _ in s if n == "ligerd_ring_capacity_records"}
    assert sessions and all(fg.ring_series(s, sid) >= 1 for sid in sessions)
    pids = {labels["pid"] for n, labels, _ in s if n == "ligerd_gpu_process_memory_bytes"}
    for pid in pids:
        assert fg.daemon_gpu_bytes(s, int(pid))[1].startswith("the daemon's own")


def test_nvidia_smi_per_process_figure():
    out = "4242, 512\n77, 9\n4242, 100\n"
    assert fg.smi_process_mib(out, 4242) == 612 and fg.smi_process_mib(out, 1) is None
    assert fg.smi_process_mib("No running processes found\n", 4242) is None


# ------------------------------------------------------------------------------------------
# flat memory

def series(values, step=10.0):
    return [(i * step, v) for i, v in enumerate(values)]


def test_flat_memory_judged_from_60_s_to_the_end():
    warm = [100, 300, 500, 700, 900, 1000]  # 0..50 s: growth while settling does not count
    assert fg.judge_flat(series(warm + [1000] * 55), 600)["flat"]
    j = fg.judge_flat(series(warm + [1000] * 50 + [1100]), 600)  # +100 MiB > max(5% of 1000, 64)
    assert not j["flat"] and j["base_t"] == 60 and j["growth"] == 100 and j["allowed"] == 64
    assert "grew 100 MiB" in j["why"]
    big = fg.judge_flat(series([4000] * 30 + [4190]), 300)  # 190 < 5% of 4000 = 200
    assert big["flat"] and big["allowed"] == 200
    assert fg.judge_flat(series([50] * 10 + [113.9]), 100)["flat"]  # 63.9 < the 64 MiB floor
    assert not fg.judge_flat(series([50] * 10 + [114.1]), 100)["flat"]


def test_flat_memory_short_runs_and_missing_samples():
    j = fg.judge_flat(series([100, 100, 100, 300]), 30)  # a 30 s run: from 15 s (the sample at 20 s)
    assert j["base_t"] == 20 and not j["flat"]
    assert not fg.judge_flat([(0, None), (10, None)], 600)["flat"]  # no GPU figure: not judged flat
    assert fg.judge_flat([(0, None), (70, 10.0), (80, 10.0)], 600)["flat"]


def test_progress_line_and_events():
    line = fg.progress_line(90.4, {"ops": 10, "checked": 30, "silent": 0, "errors": 1},
                            fg.Sample(90, 201.6, None))
    assert "90 s" in line and "10 ops" in line and "30 outputs checked" in line and "1 errors" in line
    assert "RSS 202 MiB" in line and "GPU ? MiB" in line
    assert fg.parse_event(fg.EVENT + '{"event": "started", "pid": 3}') == {"event": "started", "pid": 3}
    assert fg.parse_event("W ligerd: something") is None
    assert fg.parse_event(fg.EVENT + "{broken") is None
    assert fg.parse_event(fg.EVENT + '{"no": "event"}') is None


# ------------------------------------------------------------------------------------------
# the driver and its clients talk through events and stdin

FAKE_CLIENT = f"""
import importlib.util, os, signal, faulthandler, sys, time
spec = importlib.util.spec_from_file_location("faults_gpu", {str(SCRIPT)!r})
fg = importlib.util.module_from_spec(spec); sys.modules["faults_gpu"] = fg; spec.loader.exec_module(fg)
faulthandler.register(signal.SIGUSR1, all_threads=True)
stop = fg.StopFlag()
print("some log line", flush=True)
fg.emit("started", pid=os.getpid(), ops=2)
fg.emit("progress", ops=5, checked=9, silent=0, errors=0, problems=[])
if sys.argv[1] == "hang":
    time.sleep(60)
line = stop.wait_line(30)
fg.emit("got", line=line)
stop.stop.wait(30)
fg.emit("done", ops=7, checked=11, silent=int(sys.argv[1] == "silent"), errors=0,
        problems=["rms_norm bfloat16 3x5: Y: wrong"] if sys.argv[1] == "silent" else [])
"""


def fake(kind):
    return fg.Client("ops", 0, dict(os.environ), argv=[sys.executable, "-c", FAKE_CLIENT, kind])


def test_client_events_lines_and_stop():
    good, silent = fake("good"), fake("silent")
    try:
        assert good.wait_for("started", 60)["ops"] == 2 and good.wait_for("progress", 10)["checked"] == 9
        assert fg.wait_started([good, silent], 60) == [] and silent.wait_for("progress", 10)
        assert fg.soak_totals([good, silent])["ops"] == 10
        good.send("restarted")
        silent.send("restarted")
        assert good.wait_for("got", 10)["line"] == "restarted"
        assert good.wait_for("never", 0.2) is None
        row = fg.Row("x")
        problems = []
        totals = fg.count_outcomes(row, fg.stop_all([good, silent], 30), problems)
        assert totals == {"ops": 14, "checked": 22, "silent": 1, "errors": 0}
        assert (row.silent, row.failures, row.hangs) == (1, 0, 0) and problems == ["rms_norm bfloat16 3x5: Y: wrong"]
        assert good.proc.returncode == 0 and "some log line" in good.output_tail()
        assert good.wait_for("never", 5) is None  # its output ended: no waiting out the deadline
    finally:
        good.kill()
        silent.kill()


def test_a_client_that_does_not_stop_is_a_hang_and_shows_its_stack():
    c = fake("hang")
    try:
        assert c.wait_for("started", 60) is not None
        assert "most recent call first" in c.stacks()  # faulthandler's dump of its threads
        row = fg.Row("x")
        problems = []
        fg.count_outcomes(row, fg.stop_all([c], 1.0), problems)
        assert row.hangs == 1 and "did not stop" in problems[0]
        assert c.proc.poll() is not None  # killed
    finally:
        c.kill()


def test_main_prints_the_table_writes_rows_and_a_row_that_cannot_run_fails(monkeypatch, tmp_path, capsys):
    def broken(args, cache):
        raise RuntimeError("ligerd did not come up")

    monkeypatch.setattr(fg, "cuda_problem", lambda: None)
    monkeypatch.setattr(fg, "row_client_kill", lambda args, cache: good_row(note=f"cache {cache}"))
    monkeypatch.setattr(fg, "row_soak", broken)
    out = tmp_path / "o"
    rc = fg.main(["--ligerd-bin", "/bin/true", "--out", str(out), "--rows", "client_kill,soak"])
    printed = capsys.readouterr().out
    assert rc == 1 and "faults: 1 passed, 1 failed" in printed
    assert "FAILED: could not run: RuntimeError: ligerd did not come up" in printed
    assert f"cache {out / 'cache'}" in printed  # a fresh JIT cache under --out without LIGERD_CACHE_DIR
    data = json.loads((out / "faults_gpu.json").read_text())
    assert [r["ok"] for r in data["rows"]] == [True, False]
    assert data["rows"][1]["scenario"] == fg.ROW_NAMES["soak"]


def test_main_without_a_daemon_binary_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(fg, "cuda_problem", lambda: None)
    assert fg.main(["--ligerd-bin", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "needs the built daemon" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# without a GPU

def test_exits_2_without_a_gpu(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script would run its rows (this test is of the no-GPU path)")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python_client"), LIGERD_BIN="/bin/true")
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "o"), "--rows", "soak"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "needs a CUDA GPU" in r.stderr
    assert not (tmp_path / "o").exists()  # nothing written


# ------------------------------------------------------------------------------------------
# the clients' op cases, on the float64 reference executor

torch = pytest.importorskip("torch", reason="torch is not installed")
SMALL = {"rms_norm": [(3, 67), (2, 5, 33)], "swiglu": [(3, 71), (2, 5, 33)],
         "rope": [(2, 4, 2, 9, 16), (1, 3, 1, 5, 6)], "cross_entropy": [(13, 101), (4, 7)],
         "fused_linear_cross_entropy": [(37, 24, 301)]}


@pytest.fixture
def ops(monkeypatch):
    """faults_gpu_ops on the CPU, the executor replaced by ligerd's float64 reference."""
    from ligerd.testing import ref_executor
    monkeypatch.setenv("LIGERD_NO_DAEMON", "1")
    launcher = ref_executor.install(monkeypatch)
    mod = load("faults_gpu_ops", OPS)
    monkeypatch.setattr(mod, "DEV", "cpu")
    mod.launcher = launcher
    return mod


def test_the_mix_has_every_op_in_bf16_and_fp32(ops):
    cases = ops.all_cases()
    assert {c.op for c in cases} == set(ops.SHAPES) == set(ops.FNS)
    assert {(c.op, c.dtype) for c in cases} == {(op, dt) for op in ops.SHAPES
                                                 for dt in (torch.bfloat16, torch.float32)}
    assert len({c.name for c in cases}) == len(cases)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("op", sorted(SMALL))
def test_correct_results_pass(ops, op, dtype):
    gen = torch.Generator().manual_seed(hash((op, str(dtype))) & 0xFFFF)
    for shape in SMALL[op]:
        checked, problems = ops.Case(op, dtype, shape, ops.FNS[op]).run(gen)
        assert checked >= 2 and problems == [], problems
    assert ops.launcher.calls, "the op did not go through ligerd's executor"


@pytest.mark.parametrize("op,shape,target,output", [("rms_norm", (4, 40), "rms_norm_fwd", "Y"),
                                                    ("swiglu", (4, 40), "swiglu_bwd", "dA"),
                                                    ("rope", (1, 2, 1, 3, 8), "rope_fwd", "K_out"),
                                                    ("cross_entropy", (6, 50), "cross_entropy_fwd", "dX"),
                                                    ("fused_linear_cross_entropy", (20, 8, 30), "gemm", "D")])
def test_a_corrupted_output_is_a_silent_result(ops, monkeypatch, op, shape, target, output):
    """One element of an output made wrong by 1.0 (x4 for the norm-wise fused loss) after the
    reference wrote it: the case reports it."""
    from ligerd._entries import ENTRIES
    real = type(ops.launcher).__call__
    names = [t[0] for t in ENTRIES[target][0]]

    def corrupting(self, name, tensors, scalars):
        real(self, name, tensors, scalars)
        if name == target:
            tensors[names.index(output)].view(-1)[0] += 1.0 if op != "fused_linear_cross_entropy" else 4.0

    monkeypatch.setattr(type(ops.launcher), "__call__", corrupting)
    checked, problems = ops.Case(op, torch.float32, shape, ops.FNS[op]).run(torch.Generator().manual_seed(3))
    assert problems and all(p.startswith(f"{op} float32") for p in problems), problems


def test_check_helpers_catch_nan_shape_and_normwise_errors(ops):
    ref = torch.ones(4, 5, dtype=torch.float64)
    tol = torch.full_like(ref, 1e-3)
    assert ops.check_elementwise("Y", ref.float(), ref, tol) is None
    bad = ref.float().clone()
    bad[1, 2] = float("nan")
    assert "not finite" in ops.check_elementwise("Y", bad, ref, tol)
    assert "elements" in ops.check_elementwise("Y", torch.ones(3), ref, tol)
    assert ops.check_normwise("dW", ref * 1.001, ref, 1e-2) is None
    assert "norm-wise" in ops.check_normwise("dW", ref * 1.1, ref, 1e-2)


def test_flood_checks_its_launches(ops):
    flood = ops.Flood(torch.Generator().manual_seed(0), rows=16, n=64, every=4)
    assert [flood.step() for _ in range(8)] == [None] * 8 and flood.n == 8


def test_the_training_job_trains(ops):
    model = ops.TinyModel(torch.Generator().manual_seed(0), hidden=32, inter=48, vocab=97, tokens=40)
    losses = [model.step(lr=0.5) for _ in range(6)]
    assert all(v == v for v in losses) and losses[-1] < losses[0], losses
    assert all(p.grad is None for p in model.params)


# ------------------------------------------------------------------------------------------
# the clients' own code, in this process, local dispatch on the reference executor

TINY_SHAPES = {op: shapes[:1] for op, shapes in SMALL.items()}


def run_worker(monkeypatch, capsys, ops, fn, stdin):
    """Runs a --worker function here (its CUDA setup replaced by local dispatch on the CPU);
    returns its exit code and events."""
    import ligerd

    def setup():
        ligerd.set_dispatch_mode("local")
        return torch, ligerd, ops

    monkeypatch.setattr(ops, "SHAPES", TINY_SHAPES)
    monkeypatch.setattr(fg, "worker_setup", setup)
    monkeypatch.setattr(sys, "stdin", stdin)
    capsys.readouterr()
    rc = fn(7)
    events = [e for e in map(fg.parse_event, capsys.readouterr().out.splitlines()) if e is not None]
    return rc, events


def test_ops_client_checks_every_case_and_stops(ops, monkeypatch, capsys):
    import io
    rc, events = run_worker(monkeypatch, capsys, ops, fg.worker_ops, io.StringIO("stop\n"))
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "done", kinds
    done = events[-1]
    assert rc == 0 and done["silent"] == 0 and done["errors"] == 0 and done["mode"] == "local"
    assert done["ops"] >= len(ops.all_cases()) and done["checked"] >= 2 * done["ops"]
    assert events[0]["ops"] == len(ops.all_cases())  # the first pass, before "started"


def test_training_client_reports_the_dead_daemon_then_recovers(ops, monkeypatch, capsys):
    """The daemon "dies" after some launches (every launch then raises DaemonUnavailableError, as
    remote ones do); the client reports it, synchronizes, goes on locally, then "remotely"
    (here: local again) after the driver's "restarted"."""
    import ligerd
    from ligerd import _backend
    state = {"calls": 0, "dead": False}
    real = _backend._test_launcher

    def launcher(op, tensors, scalars):
        state["calls"] += 1
        if state["calls"] == 60:
            state["dead"] = True
        if state["dead"]:
            raise ligerd.DaemonUnavailableError("ligerd: the daemon on /x.sock is gone")
        return real(op, tensors, scalars)

    r, w = os.pipe()
    real_set = ligerd.set_dispatch_mode

    def set_mode(mode):
        state["dead"] = False  # a fresh session: local, or a new daemon
        if mode == "remote":
            os.close(w)  # the driver's "stop" comes after the remote phase
        real_set("local")

    monkeypatch.setattr(_backend, "_test_launcher", launcher)
    monkeypatch.setattr(ligerd, "set_dispatch_mode", set_mode)
    small_model = ops.TinyModel
    monkeypatch.setattr(ops, "TinyModel", lambda gen: small_model(gen, hidden=32, inter=48, vocab=97, tokens=40))
    os.write(w, b"restarted\n")
    with os.fdopen(r) as stdin:
        rc, events = run_worker(monkeypatch, capsys, ops, fg.worker_train, stdin)
    by = {e["event"]: e for e in events}
    assert [e["event"] for e in events] == ["started", "unavailable", "synchronized", "local_done", "remote_done"]
    assert rc == 0
    err = by["unavailable"]
    assert err["error"] == "DaemonUnavailableError" and err["stays"] and "gone" in err["message"]
    assert by["synchronized"]["ok"]
    for phase in ("local_done", "remote_done"):
        e = by[phase]
        assert e["finite_loss"] and len(e["losses"]) == 5 and e["silent"] == 0 and e["errors"] == 0, e
        assert e["ops"] == len(ops.all_cases())
