#!/usr/bin/env python3
"""The fault suite's GPU part (issue 17): faults a node's GPU jobs see, each tried several times,
with a table of figures in the shape of the CPU part's (tests/faults/faults_cpu.cc): trials,
crashes (the daemon died), hangs (a deadline passed), silent results (a wrong answer with no
error), other failures, and the measured figure against its limit. Exit status 0 only when every
row has zero crashes, hangs, silent results and failures and meets its limit; 2 when it cannot run
(no CUDA GPU, no built daemon).

Rows (each starts its own daemon(s) from --ligerd-bin on a private socket, with --metrics_address
on a free loopback port; the clients are child processes of this script in remote dispatch,
LIGERD_SOCKET naming that daemon and LIGERD_AUTOSTART=0):
  client_kill   "client SIGKILL mid-op (GPU)": --clients processes; one floods its ring with
                rms_norm launches and is SIGKILLed; figure = ms from the kill until the daemon's
                ligerd_sessions (its /metrics) has dropped that session and its ring's series,
                limit 1000 ms; the others go on doing checked ops (forward and backward of every
                op of the mix, float64 references) and must end with every result within
                tolerance (else silent results) and no error (else failures). --trials trials.
  daemon_kill   "daemon SIGKILL mid-training (GPU)": a client training a small model (rms_norm,
                SwiGLU, fused linear cross-entropy; remote); its daemon is SIGKILLed; figure = ms
                from the kill to the client's ligerd.DaemonUnavailableError, limit 2000 ms; then
                torch.cuda.synchronize() must return within 10 s (else a hang) and the next op
                must still raise it. Then what docs/node-service.md ("When the daemon dies")
                says a job can do: restore the state from before the step in which the error
                came (each step ends with ligerd.synchronize(), which raises in the step whose
                results the death left undefined), fall back to local dispatch (set_dispatch_mode("local")) and
                go on, results checked; and, once a new daemon is up on the same socket, go back
                to remote (set_dispatch_mode("remote"): a fresh session), results checked.
  soak          "soak, N clients under MPS (GPU)": --clients processes run the op mix (rms_norm,
                swiglu, rope, cross_entropy, fused linear cross-entropy; bf16 and fp32; odd shapes)
                for --soak-seconds, every output checked against a float64 reference
                (tests/faults/faults_gpu_ops.py has the tolerances); the daemon's RSS
                (/proc/<pid>/status) and GPU memory (NVML's per-process figure, from its /metrics
                or nvidia-smi; where MPS hides it, the GPU's total in use, as the note says) are
                sampled every 10 s. Flat
                memory: growth from the sample at 60 s to the end below max(5%, 64 MiB), RSS and
                GPU. Figure = checked ops per second (no limit); errors are failures. Progress
                every 30 s; samples to <out>/soak_memory.csv and a plot to soak_memory.png
                (with matplotlib).

Run on a GPU machine, inside MPS (this script does not start MPS; it reports whether the daemon
sees it active):
    nvidia-cuda-mps-control -d
    PYTHONPATH=<build>/python LIGERD_BIN=<build>/server/ligerd \\
      python3 tests/faults/faults_gpu.py --out <dir>
    echo quit | nvidia-cuda-mps-control
Writes <out>/faults_gpu.csv and faults_gpu.json (the rows) besides the table on stdout.
PYTORCH_CUDA_ALLOC_CONF=expandable_segments is dropped from the clients' environment (CUDA IPC
cannot share such memory). LIGERD_CACHE_DIR, when set, is the daemons' JIT cache (warm kernels);
else a fresh one under --out. /metrics is parsed by prometheus_client where it is installed, else
by a sample-line parser checked against it (simple_samples).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS = ("client_kill", "daemon_kill", "soak")
ROW_NAMES = {"client_kill": "client SIGKILL mid-op (GPU)", "daemon_kill": "daemon SIGKILL mid-training (GPU)",
             "soak": "soak, N clients under MPS (GPU)"}
EVENT = "@@faults "  # a client's structured lines on its stdout: EVENT + one JSON object
MIB = 1 << 20


# ==========================================================================================
# The table (pure: tests/python/test_faults_gpu_script.py)

@dataclass
class Row:
    scenario: str
    unit: str = ""
    limit: float = 0.0  # figure must be <= limit (0: no limit)
    trials: int = 0
    crashes: int = 0
    hangs: int = 0
    silent: int = 0
    failures: int = 0  # other checks that did not hold
    figure: float = 0.0  # the worst measured value (the soak: its rate)
    note: str = ""

    def ok(self) -> bool:
        return (self.crashes == 0 and self.hangs == 0 and self.silent == 0 and self.failures == 0
                and (self.limit == 0 or self.figure <= self.limit))


def format_table(rows: Sequence[Row]) -> str:
    """The CPU suite's table layout (faults_cpu.cc's main), one line a row."""
    out = "%-36s %7s %7s %5s %6s %8s %8s  %-22s %s\n" % (
        "scenario", "trials", "crashes", "hangs", "silent", "failures", "figure", "limit", "note")
    for r in rows:
        limit = f"{r.unit} <= {r.limit:.0f}" if r.limit > 0 else r.unit
        out += "%-36s %7d %7d %5d %6d %8d %8.1f  %-22s %s%s\n" % (
            r.scenario, r.trials, r.crashes, r.hangs, r.silent, r.failures, r.figure, limit,
            "" if r.ok() else "FAILED: ", r.note)
    return out


def summary_line(rows: Sequence[Row]) -> str:
    passed = sum(r.ok() for r in rows)
    return f"faults: {passed} passed, {len(rows) - passed} failed"


def exit_status(rows: Sequence[Row]) -> int:
    """0 only when every row is ok (faults_cpu.cc's rule); an empty table is not a pass."""
    return 0 if rows and all(r.ok() for r in rows) else 1


def write_rows(rows: Sequence[Row], out_dir: str) -> Tuple[str, str]:
    """<out_dir>/faults_gpu.csv and faults_gpu.json, each row with its ok; returns both paths."""
    os.makedirs(out_dir, exist_ok=True)
    records = [dict(asdict(r), ok=r.ok()) for r in rows]
    csv_path, json_path = os.path.join(out_dir, "faults_gpu.csv"), os.path.join(out_dir, "faults_gpu.json")
    names = [f.name for f in Row.__dataclass_fields__.values()] + ["ok"]
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=names)
        w.writeheader()
        w.writerows(records)
    with open(json_path, "w") as f:
        json.dump({"rows": records, "passed": exit_status(rows) == 0}, f, indent=1)
    return csv_path, json_path


# ==========================================================================================
# The daemon's /metrics (pure)

def metric_samples(text: str) -> List[Tuple[str, Dict[str, str], float]]:
    """(name, labels, value) of every sample of a Prometheus text exposition, by prometheus_client's
    parser (counters keep their _total name); where it is not installed (the GPU machine reaches
    no package index), by simple_samples."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        return simple_samples(text)
    return [(s.name, dict(s.labels), float(s.value))
            for fam in text_string_to_metric_families(text) for s in fam.samples]


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def simple_samples(text: str) -> List[Tuple[str, Dict[str, str], float]]:
    """The sample lines of the text format (name{label="value",...} value [timestamp]); comments
    skipped. Enough for ligerd's own exposition; tests check it agrees with prometheus_client."""
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line.strip())
        if not m or line.startswith("#"):
            continue
        labels = {k: re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), v)
                  for k, v in _LABEL.findall(m.group(2) or "")}
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def sessions_open(samples) -> int:
    """ligerd_sessions summed over its dispatch labels (0 when absent)."""
    return int(sum(v for n, _, v in samples if n == "ligerd_sessions"))


def ring_series(samples, session_id) -> int:
    """How many ligerd_ring_* series name this session (a dropped session has none)."""
    sid = str(session_id)
    return sum(1 for n, labels, _ in samples if n.startswith("ligerd_ring_") and labels.get("session") == sid)


def daemon_gpu_bytes(samples, pid: int) -> Tuple[Optional[float], str]:
    """The daemon's GPU memory: NVML's per-process figure for ``pid`` (every GPU), else the GPUs'
    total in use (all processes: MPS can hide per-process memory), else None; and which it is."""
    own = [v for n, labels, v in samples
           if n == "ligerd_gpu_process_memory_bytes" and labels.get("pid") == str(pid)]
    if own:
        return sum(own), "the daemon's own (NVML per process)"
    total = [v for n, _, v in samples if n == "ligerd_gpu_memory_used_bytes"]
    if total:
        return sum(total), "the GPU's total in use, all processes (NVML shows no per-process figure)"
    return None, "none (no NVML series in /metrics)"


# ==========================================================================================
# Flat memory (pure)

@dataclass
class Sample:
    t: float  # seconds since the soak started
    rss_mib: float
    gpu_mib: Optional[float]
    gpu_source: str = ""  # which figure gpu_mib is (daemon_gpu_bytes, sample_memory)


def judge_flat(points: Sequence[Tuple[float, float]], duration: float, settle_s: float = 60.0,
               rel: float = 0.05, abs_mib: float = 64.0) -> dict:
    """Growth of a memory series from its first sample at or after the settling time (60 s, or
    half the run when it is shorter) to its last sample, against max(rel x that sample, abs_mib)."""
    points = [(t, v) for t, v in points if v is not None]
    if not points:
        return {"flat": False, "why": "no samples"}
    settle = min(settle_s, duration / 2)
    base_t, base = next(((t, v) for t, v in points if t >= settle), points[-1])
    end_t, end = points[-1]
    allowed = max(rel * base, abs_mib)
    growth = end - base
    return {"flat": growth <= allowed, "base_t": base_t, "base": base, "end_t": end_t, "end": end,
            "growth": growth, "allowed": allowed, "why": "" if growth <= allowed else
            f"grew {growth:.0f} MiB from {base_t:.0f} s to {end_t:.0f} s (allowed {allowed:.0f})"}


def progress_line(elapsed: float, totals: dict, sample: Optional[Sample]) -> str:
    rss = f"{sample.rss_mib:.0f}" if sample else "?"
    gpu = f"{sample.gpu_mib:.0f}" if sample and sample.gpu_mib is not None else "?"
    return (f"faults_gpu: soak {elapsed:5.0f} s: {totals.get('ops', 0)} ops, {totals.get('checked', 0)} "
            f"outputs checked, {totals.get('silent', 0)} silent, {totals.get('errors', 0)} errors; "
            f"daemon RSS {rss} MiB, GPU {gpu} MiB")


def parse_event(line: str) -> Optional[dict]:
    """A client's structured line (EVENT + JSON), else None."""
    if not line.startswith(EVENT):
        return None
    try:
        ev = json.loads(line[len(EVENT):])
    except ValueError:
        return None
    return ev if isinstance(ev, dict) and "event" in ev else None


# ==========================================================================================
# The driver's processes: a daemon with /metrics, and clients (this script in --worker mode)

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/status") as f:
            m = re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)
    except OSError:
        return None
    return int(m.group(1)) / 1024 if m else None


def wait_until(pred: Callable[[], bool], timeout: float, poll: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


class Node:
    """A ligerd (ligerd.testing.gpu.Daemon) with its /metrics on a free loopback port."""

    def __init__(self, binary: str, cache: str, socket_path: Optional[str] = None):
        from ligerd.testing.gpu import Daemon
        err = None
        for _ in range(3):  # the free port can be taken before the daemon binds it
            self.port = free_port()
            try:
                self.daemon = Daemon(binary, cache_dir=cache, prefix="ligerd-faults-gpu-", socket=socket_path,
                                     args=(f"--metrics_address=127.0.0.1:{self.port}",))
                return
            except RuntimeError as e:
                err = e
        raise err

    @property
    def socket(self) -> str:
        return self.daemon.socket

    @property
    def pid(self) -> int:
        return self.daemon.proc.pid

    def alive(self) -> bool:
        return self.daemon.proc.poll() is None

    def samples(self):
        """The parsed /metrics, or None when it does not answer."""
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                return metric_samples(r.read().decode())
        except (OSError, ValueError):
            return None

    def sessions(self) -> Optional[int]:
        s = self.samples()
        return None if s is None else sessions_open(s)

    def kill(self) -> None:
        self.daemon.proc.send_signal(signal.SIGKILL)
        self.daemon.proc.wait(10)

    def stop(self) -> None:
        self.daemon.stop()

    def log_tail(self) -> str:
        return self.daemon.log_tail()


def client_env(node: Node, cache: str) -> dict:
    env = dict(os.environ, LIGERD_SOCKET=node.socket, LIGERD_AUTOSTART="0", LIGERD_CACHE_DIR=cache,
               LIGERD_DISPATCH="remote", PYTHONUNBUFFERED="1")
    if "expandable_segments" in env.get("PYTORCH_CUDA_ALLOC_CONF", ""):
        env.pop("PYTORCH_CUDA_ALLOC_CONF")  # VMM allocations cannot be shared by CUDA IPC
    return env


class Client:
    """This script as a client process (--worker KIND); its events are read by a thread."""

    def __init__(self, kind: str, seed: int, env: dict, argv: Optional[List[str]] = None):
        self.kind = kind
        argv = argv or [sys.executable, os.path.abspath(__file__), "--worker", kind, "--seed", str(seed)]
        self.proc = subprocess.Popen(argv, env=env, text=True, bufsize=1, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.events: List[dict] = []
        self.tail = deque(maxlen=40)
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            ev = parse_event(line)
            with self.cond:
                if ev is None:
                    self.tail.append(line.rstrip())
                else:
                    self.events.append(ev)
                self.cond.notify_all()
        with self.cond:
            self.events.append({"event": "eof"})
            self.cond.notify_all()

    def last(self, kind: str) -> Optional[dict]:
        with self.cond:
            return next((e for e in reversed(self.events) if e["event"] == kind), None)

    def wait_for(self, kind: str, timeout: float) -> Optional[dict]:
        """The first event ``kind``; None when the deadline passes or the client's output ends."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                ev = next((e for e in self.events if e["event"] == kind), None)
                if ev is not None:
                    return ev
                left = deadline - time.monotonic()
                if left <= 0 or any(e["event"] == "eof" for e in self.events):
                    return None
                self.cond.wait(min(left, 1.0))

    def send(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass  # it exited: its events say why

    def finish(self, timeout: float) -> Optional[int]:
        """Return code after ``stop``; None if it did not exit in time (then it is killed)."""
        self.send("stop")
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stacks(self) -> str:
        """Its threads' Python stacks (faulthandler on SIGUSR1) and the rest of its output's tail."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
        return self.output_tail()

    def output_tail(self) -> str:
        with self.cond:
            return "\n".join(self.tail)


def start_clients(n: int, kind: str, env: dict, seed0: int) -> List[Client]:
    return [Client(kind, seed0 + i, env) for i in range(n)]


def wait_started(clients: Sequence[Client], timeout: float) -> List[str]:
    """Problems: clients that did not report "started" in time (their output's tail)."""
    deadline = time.monotonic() + timeout
    bad = []
    for c in clients:
        if c.wait_for("started", max(0.0, deadline - time.monotonic())) is None:
            bad.append(f"a {c.kind} client did not start: {c.output_tail()[-1500:]}")
    return bad


def mps_note(ev: Optional[dict]) -> str:
    reason = (ev or {}).get("reason") or ""
    return "MPS active" if "MPS active" in reason else f"MPS not active ({reason or 'no reason given'})"


def stop_all(clients: Sequence[Client], timeout: float) -> List[Tuple[Client, Optional[int], Optional[dict]]]:
    """Asks every client to stop; (client, return code or None on a hang, its "done" event)."""
    for c in clients:
        c.send("stop")
    return [(c, c.finish(timeout), c.wait_for("done", 1.0)) for c in clients]


def count_outcomes(row: Row, results, problems: List[str]) -> dict:
    """Adds clients' ends to the row: hangs (no exit), silent results and errors (failures)."""
    totals = {"ops": 0, "checked": 0, "silent": 0, "errors": 0}
    for c, rc, done in results:
        if rc is None:
            row.hangs += 1
            problems.append(f"a {c.kind} client did not stop: {c.output_tail()[-800:]}")
            continue
        if done is None:
            row.failures += 1
            problems.append(f"a {c.kind} client exited {rc} without its summary: {c.output_tail()[-800:]}")
            continue
        for k in totals:
            totals[k] += int(done.get(k, 0))
        row.silent += int(done.get("silent", 0))
        row.failures += int(done.get("errors", 0))
        problems.extend(done.get("problems", [])[:3])
    return totals


def report_problems(name: str, problems: List[str]) -> None:
    for p in problems[:20]:
        print(f"faults_gpu: {name}: {p}", file=sys.stderr)


# ==========================================================================================
# Row 1: a client SIGKILLed with ops in its ring

def row_client_kill(args, cache: str) -> Row:
    row = Row(ROW_NAMES["client_kill"], unit="ms to drop", limit=1000)
    node = Node(args.ligerd_bin, cache)
    problems: List[str] = []
    mps = ""
    try:
        for trial in range(args.trials):
            row.trials += 1
            mps = client_kill_trial(row, node, args, cache, problems, f"trial {trial}", 100 * trial) or mps
            if not node.alive():
                row.crashes += 1
                problems.append(f"trial {trial}: the daemon died: {node.log_tail()[-1500:]}")
                node.stop()
                node = Node(args.ligerd_bin, cache)
    finally:
        node.stop()
    report_problems("client_kill", problems)
    row.note = (f"{args.clients} clients a trial, 1 killed while flooding its ring; the other "
                f"{args.clients - 1} checked every op until stopped; {mps}")
    return row


def client_kill_trial(row: Row, node: Node, args, cache: str, problems: List[str], trial: str, seed: int) -> str:
    """One trial (see the module docstring); returns what the clients were told about MPS."""
    env = client_env(node, cache)
    survivors = start_clients(args.clients - 1, "ops", env, seed)
    clients = list(survivors)
    try:
        bad = wait_started(survivors, args.start_timeout)
        if not bad:  # the flood starts once the others are running (it would slow their start)
            victim = Client("flood", seed + args.clients, env)
            clients.append(victim)
            bad = wait_started([victim], args.start_timeout)
        if bad or not wait_until(lambda: node.sessions() == len(clients), 10, poll=0.1):
            row.failures += 1
            problems.extend(bad or [f"{trial}: {node.sessions()} sessions open, not {len(clients)}"])
            return ""
        victim_session = victim.last("started").get("session")
        time.sleep(0.5)  # mid-stream: the victim's ring has launches queued
        t0 = time.monotonic()  # from the kill
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)

        def dropped():
            s = node.samples()
            return s is not None and sessions_open(s) == len(survivors) and ring_series(s, victim_session) == 0

        gone = wait_until(dropped, 3.0)
        row.figure = max(row.figure, (time.monotonic() - t0) * 1000)
        if not gone:
            row.hangs += 1
            problems.append(f"{trial}: the killed client's session still open 3 s later ({node.sessions()} sessions)")
        time.sleep(1.0)  # the survivors go on after the drop
        count_outcomes(row, stop_all(survivors, args.stop_timeout), problems)
        if node.alive() and not wait_until(lambda: node.sessions() == 0, 5, poll=0.1):
            row.failures += 1
            problems.append(f"{trial}: {node.sessions()} sessions left after every client exited")
        return mps_note(survivors[0].last("started"))
    finally:
        for c in clients:
            c.kill()


# ==========================================================================================
# Row 2: the daemon SIGKILLed under a training job

def row_daemon_kill(args, cache: str) -> Row:
    row = Row(ROW_NAMES["daemon_kill"], unit="ms to error", limit=2000)
    problems: List[str] = []
    recovered = 0
    for trial in range(args.trials):
        row.trials += 1
        nodes = [Node(args.ligerd_bin, cache)]  # the victim, then its successor on the same socket
        client = Client("train", 1000 + trial, client_env(nodes[0], cache))
        try:
            recovered += daemon_kill_trial(row, nodes, client, args, cache, problems, f"trial {trial}")
        finally:
            client.kill()
            for node in nodes[1:]:
                if not node.alive():
                    row.crashes += 1
                    problems.append(f"trial {trial}: the restarted daemon died: {node.log_tail()[-1500:]}")
            for node in nodes:
                node.stop()
    report_problems("daemon_kill", problems)
    row.note = (f"then torch.cuda.synchronize() returns; local fallback, and a new daemon on the same socket, "
                f"both served checked results ({recovered} of {row.trials} trials)")
    return row


def daemon_kill_trial(row: Row, nodes: List[Node], client: Client, args, cache: str, problems: List[str],
                      trial: str) -> int:
    """One trial (see the module docstring); 1 when the job recovered both ways. A restarted
    daemon is appended to ``nodes``."""
    if client.wait_for("started", args.start_timeout) is None:
        row.failures += 1
        problems.append(f"{trial}: the training client did not start: {client.output_tail()[-1500:]}")
        return 0
    time.sleep(0.5)  # a few steps in flight
    t_kill = time.monotonic()  # CLOCK_MONOTONIC: the client's clock too
    nodes[0].kill()
    err = client.wait_for("unavailable", 10)
    if err is None:
        row.hangs += 1
        problems.append(f"{trial}: no error 10 s after the kill; the client's stacks: {client.stacks()[-3000:]}")
        return 0
    row.figure = max(row.figure, (err["t"] - t_kill) * 1000)
    if err.get("error") != "DaemonUnavailableError" or not err.get("stays", False):
        row.failures += 1
        problems.append(f"{trial}: the error was {err.get('error')} ({err.get('message')}), then "
                        f"{err.get('next')} at the next op: both should be DaemonUnavailableError")
    synced = client.wait_for("synchronized", 15)
    if synced is None or not synced.get("ok"):
        row.hangs += 1
        problems.append(f"{trial}: torch.cuda.synchronize() did not return after the daemon died")
        return 0
    ok = phase_outcome(row, client.wait_for("local_done", args.stop_timeout), "local fallback", "local",
                       problems, trial, client)
    try:
        nodes.append(Node(args.ligerd_bin, cache, socket_path=nodes[0].socket))
    except RuntimeError as e:
        row.failures += 1
        problems.append(f"{trial}: no new daemon on the same socket: {e}")
        return 0
    client.send("restarted")
    ok += phase_outcome(row, client.wait_for("remote_done", args.stop_timeout), "a new daemon", "remote",
                        problems, trial, client)
    if nodes[1].sessions() != 1:
        row.failures += 1
        problems.append(f"{trial}: the new daemon has {nodes[1].sessions()} sessions open, not the job's 1")
    rc = client.finish(60)
    if rc is None:
        row.hangs += 1
        problems.append(f"{trial}: the training client did not exit when stopped")
    elif rc != 0:
        row.failures += 1
        problems.append(f"{trial}: the training client exited {rc}: {client.output_tail()[-800:]}")
    return 1 if ok == 2 else 0


def phase_outcome(row: Row, ev: Optional[dict], what: str, mode: str, problems: List[str], trial: str,
                  client: Client) -> int:
    """Counts a recovery phase's results; 1 when it ran in ``mode`` with every result good."""
    if ev is None:
        row.failures += 1
        problems.append(f"{trial}: {what}: no result: {client.output_tail()[-800:]}")
        return 0
    row.silent += int(ev.get("silent", 0))
    row.failures += int(ev.get("errors", 0))
    problems.extend(f"{trial}: {what}: {p}" for p in ev.get("problems", [])[:3])
    if ev.get("mode") != mode:
        row.failures += 1
        problems.append(f"{trial}: {what}: ops ran in {ev.get('mode')} dispatch, not {mode}")
        return 0
    if not ev.get("finite_loss", False):
        row.silent += 1
        problems.append(f"{trial}: {what}: the training loss is not finite")
        return 0
    return 1 if ev.get("silent", 0) == 0 and ev.get("errors", 0) == 0 else 0


# ==========================================================================================
# Row 3: the soak

def smi_process_mib(csv_text: str, pid: int) -> Optional[float]:
    """The used_memory (MiB) of ``pid`` in `nvidia-smi --query-compute-apps=pid,used_memory
    --format=csv,noheader,nounits` output, summed over GPUs; None when it is not listed."""
    found = [float(m.group(2)) for m in re.finditer(r"^\s*(\d+)\s*,\s*(\d+(?:\.\d+)?)\s*$", csv_text, re.M)
             if int(m.group(1)) == pid]
    return sum(found) if found else None


def nvidia_smi_mib(pid: int) -> Optional[float]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return smi_process_mib(out, pid)


def sample_memory(node: Node, t: float) -> Sample:
    """The daemon's RSS and GPU memory now: NVML's per-process figure from /metrics, else
    nvidia-smi's for its pid, else the GPU's total from /metrics."""
    gpu, source = None, "none (/metrics did not answer)"
    s = node.samples()
    if s is not None:
        gpu, source = daemon_gpu_bytes(s, node.pid)
    gpu_mib = None if gpu is None else gpu / MIB
    if not source.startswith("the daemon's own"):
        smi = nvidia_smi_mib(node.pid)
        if smi is not None:
            gpu_mib, source = smi, "the daemon's own (nvidia-smi per process)"
    return Sample(t, rss_mib(node.pid) or 0.0, gpu_mib, source)


def write_samples(samples: Sequence[Sample], out_dir: str) -> List[str]:
    """<out>/soak_memory.csv, and soak_memory.png when matplotlib is importable."""
    path = os.path.join(out_dir, "soak_memory.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seconds", "daemon_rss_mib", "gpu_mib"])
        for s in samples:
            w.writerow([f"{s.t:.1f}", f"{s.rss_mib:.1f}", "" if s.gpu_mib is None else f"{s.gpu_mib:.1f}"])
    written = [path]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("faults_gpu: matplotlib is not importable: no soak_memory.png", file=sys.stderr)
        return written
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([s.t for s in samples], [s.rss_mib for s in samples], label="daemon RSS (MiB)")
    gpu = [(s.t, s.gpu_mib) for s in samples if s.gpu_mib is not None]
    if gpu:
        ax.plot(*zip(*gpu), label="GPU memory (MiB)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("MiB")
    ax.set_title("ligerd soak: memory over time")
    ax.legend()
    fig.tight_layout()
    png = os.path.join(out_dir, "soak_memory.png")
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return written + [png]


def soak_totals(clients: Sequence[Client]) -> dict:
    totals = {"ops": 0, "checked": 0, "silent": 0, "errors": 0}
    for c in clients:
        ev = c.last("progress")
        for k in totals:
            totals[k] += int((ev or {}).get(k, 0))
    return totals


def row_soak(args, cache: str) -> Row:
    row = Row(ROW_NAMES["soak"].replace("N clients", f"{args.clients} clients"), unit="ops/s")
    node = Node(args.ligerd_bin, cache)
    problems: List[str] = []
    samples: List[Sample] = []
    clients = start_clients(args.clients, "ops", client_env(node, cache), 5000)
    try:
        row.trials = 1
        bad = wait_started(clients, args.start_timeout)
        if bad:
            row.failures += len(bad)
            report_problems("soak", bad)
            for c in clients:
                c.kill()
            row.note = "clients did not start"
            return row
        mps = mps_note(clients[0].last("started"))
        t0 = time.monotonic()
        next_sample, next_print = 0.0, 30.0
        while True:
            elapsed = time.monotonic() - t0
            if elapsed >= next_sample or elapsed >= args.soak_seconds:
                samples.append(sample_memory(node, elapsed))
                next_sample += 10.0
            if elapsed >= next_print:
                print(progress_line(elapsed, soak_totals(clients), samples[-1]), flush=True)
                next_print += 30.0
            if elapsed >= args.soak_seconds or not node.alive():
                break
            early = [c for c in clients if c.proc.poll() is not None]
            if early:  # counted below from what it said last
                problems += [f"a client exited {c.proc.returncode} during the soak" for c in early]
                break
            time.sleep(1.0)
        duration = time.monotonic() - t0
        if not node.alive():
            row.crashes += 1
            problems.append(f"the daemon died: {node.log_tail()[-1500:]}")
        totals = count_outcomes(row, stop_all(clients, args.stop_timeout), problems)
        warmup_ops = sum(int((c.last("started") or {}).get("ops", 0)) for c in clients)
        print(progress_line(duration, totals, samples[-1] if samples else None), flush=True)
        rss = judge_flat([(s.t, s.rss_mib) for s in samples], duration)
        source = samples[-1].gpu_source if samples else "none"
        gpu = judge_flat([(s.t, s.gpu_mib) for s in samples if s.gpu_source == source], duration)
        for what, j in (("RSS", rss), ("GPU memory", gpu)):
            if not j["flat"]:
                row.failures += 1
                problems.append(f"the daemon's {what} is not flat: {j['why']}")
        row.figure = (totals["ops"] - warmup_ops) / max(duration, 1e-9)  # the first pass was before t0
        files = write_samples(samples, args.out)
        row.note = (f"{totals['ops']} ops ({totals['checked']} outputs checked), {totals['errors']} errors in "
                    f"{duration:.0f} s; daemon RSS {fmt_mib(rss, 'base')} -> {fmt_mib(rss, 'end')} MiB, "
                    f"GPU {fmt_mib(gpu, 'base')} -> {fmt_mib(gpu, 'end')} MiB (from {rss.get('base_t', 0):.0f} s; "
                    f"GPU: {source}); {mps}; samples: {', '.join(os.path.basename(p) for p in files)}")
    finally:
        for c in clients:
            c.kill()
        node.stop()
    report_problems("soak", problems)
    return row


def fmt_mib(judged: dict, key: str) -> str:
    v = judged.get(key)
    return "?" if v is None else f"{v:.0f}"


# ==========================================================================================
# Clients (--worker): ops, flood, train. Structured output on stdout; "stop" on stdin ends them.

def emit(kind: str, **fields) -> None:
    print(EVENT + json.dumps(dict(event=kind, **fields)), flush=True)


class StopFlag:
    """Set when the driver writes "stop" (or closes stdin); lines other than "stop" are queued."""

    def __init__(self):
        self.stop = threading.Event()
        self.lines: "deque[str]" = deque()
        self.got = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
            self.lines.append(line.strip())
            self.got.set()
        self.stop.set()
        self.got.set()

    def wait_line(self, timeout: float) -> Optional[str]:
        deadline = time.monotonic() + timeout
        while not self.lines and not self.stop.is_set() and time.monotonic() < deadline:
            self.got.wait(0.1)
        return self.lines.popleft() if self.lines else None


def worker_setup():
    import torch
    import ligerd
    torch.backends.cuda.matmul.allow_tf32 = False  # true fp32 GEMMs (the fused loss's fp32 bound)
    ligerd.set_dispatch_mode("remote")
    sys.path.insert(0, HERE)
    import faults_gpu_ops as ops
    return torch, ligerd, ops


def device_info(ligerd, torch) -> dict:
    """How this process's ops on its CUDA device run (the process-wide mode before any ran there)."""
    info = ligerd.dispatch_info()
    dev = info["devices"].get(torch.cuda.current_device() if torch.cuda.is_available() else 0) or {}
    return {"mode": dev.get("mode", info["mode"]), "reason": dev.get("reason", info["reason"]),
            "session": dev.get("session_id")}


class Tally:
    """ops run, outputs checked, silent results and errors of a client, with the first problems."""

    def __init__(self):
        self.ops = self.checked = self.silent = self.errors = 0
        self.problems: List[str] = []

    def run(self, case, gen, ligerd) -> None:
        """One case; a DaemonUnavailableError is re-raised (the caller's business)."""
        try:
            checked, problems = case.run(gen)
        except ligerd.DaemonUnavailableError:
            raise
        except ligerd.LigerdError as e:
            self.errors += 1
            self.note(f"{case.name}: {type(e).__name__}: {e}")
            return
        self.ops += 1
        self.checked += checked
        self.silent += len(problems)
        for p in problems:
            self.note(p)

    def note(self, p: str) -> None:
        if len(self.problems) < 10:
            self.problems.append(p[:600])

    def fields(self) -> dict:
        return {"ops": self.ops, "checked": self.checked, "silent": self.silent, "errors": self.errors,
                "problems": self.problems}


def worker_ops(seed: int) -> int:
    """Every case of the mix once, "started", then round-robin until stopped, progress every 2 s."""
    torch, ligerd, ops = worker_setup()
    stop = StopFlag()
    gen = torch.Generator(device=ops.DEV).manual_seed(seed)
    cases = ops.all_cases()
    cases = cases[seed % len(cases):] + cases[:seed % len(cases)]  # clients start at different ops
    tally = Tally()
    try:
        for case in cases:
            tally.run(case, gen, ligerd)
        emit("started", pid=os.getpid(), **tally.fields(), **device_info(ligerd, torch))
        i, last = 0, time.monotonic()
        while not stop.stop.is_set():
            tally.run(cases[i % len(cases)], gen, ligerd)
            i += 1
            if time.monotonic() - last >= 2.0:
                emit("progress", **tally.fields())
                last = time.monotonic()
    except ligerd.DaemonUnavailableError as e:
        tally.errors += 1
        tally.note(f"DaemonUnavailableError: {e}")
    emit("progress", **tally.fields())
    emit("done", **tally.fields(), **device_info(ligerd, torch))
    return 0 if tally.errors == 0 and tally.silent == 0 else 1


def worker_flood(seed: int) -> int:
    """rms_norm launched back to back (checked every 50) until killed."""
    torch, ligerd, ops = worker_setup()
    stop = StopFlag()
    flood = ops.Flood(torch.Generator(device=ops.DEV).manual_seed(seed))
    problem = None
    while problem is None and flood.n < flood.every:  # one checked round before "started"
        problem = flood.step()
    emit("started", pid=os.getpid(), **device_info(ligerd, torch))
    while not stop.stop.is_set():
        problem = flood.step() or problem
    emit("done", ops=flood.n, checked=flood.n // flood.every, silent=int(problem is not None), errors=0,
         problems=[problem] if problem else [])
    return 0


def recovery_phase(kind: str, model, torch, ligerd, ops, gen, steps=5) -> None:
    """Training steps and every case of the mix in the current dispatch; emits ``<kind>_done``."""
    tally = Tally()
    losses = []
    try:
        for _ in range(steps):
            losses.append(model.step())
        for case in ops.all_cases():
            tally.run(case, gen, ligerd)
    except ligerd.LigerdError as e:
        tally.errors += 1
        tally.note(f"{type(e).__name__}: {e}")
    emit(f"{kind}_done", finite_loss=bool(losses) and all(map(lambda v: v == v and abs(v) < 1e30, losses)),
         losses=losses, **tally.fields(), **device_info(ligerd, torch))


def worker_train(seed: int) -> int:
    """Trains until an op raises DaemonUnavailableError; then synchronize (in a thread, 10 s),
    the error again at the next op, local fallback, and remote again once "restarted" comes."""
    torch, ligerd, ops = worker_setup()
    stop = StopFlag()
    gen = torch.Generator(device=ops.DEV).manual_seed(seed)
    model = ops.TinyModel(gen)
    model.step()
    emit("started", pid=os.getpid(), **device_info(ligerd, torch))
    try:
        while not stop.stop.is_set():
            before = model.state()
            model.step()
            ligerd.synchronize()  # raises in the step whose results the daemon's death left undefined
        return 1  # stopped without the daemon dying: the driver's trial failed before
    except ligerd.LigerdError as e:  # DaemonUnavailableError is what must come
        t, error, message = time.monotonic(), type(e).__name__, str(e)
    try:
        model.step()
        following = "no error"
    except ligerd.LigerdError as e:  # and it stays reported
        following = type(e).__name__
    emit("unavailable", t=t, error=error, message=message[:600], next=following,
         stays=following == "DaemonUnavailableError")
    done = threading.Event()
    threading.Thread(target=lambda: (ops.sync(), done.set()), daemon=True).start()  # torch.cuda.synchronize()
    synced = done.wait(10)
    emit("synchronized", ok=synced)
    if not synced:
        os._exit(3)
    model.restore(before)  # the step under way when the daemon died is undefined: redo it
    ligerd.set_dispatch_mode("local")
    recovery_phase("local", model, torch, ligerd, ops, gen)
    if stop.wait_line(600) != "restarted":
        return 1
    ligerd.set_dispatch_mode("remote")
    recovery_phase("remote", model, torch, ligerd, ops, gen)
    stop.stop.wait(60)
    return 0


WORKERS = {"ops": worker_ops, "flood": worker_flood, "train": worker_train}


# ==========================================================================================
# main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ligerd-bin", default=os.environ.get("LIGERD_BIN", ""),
                   help="the built daemon (default $LIGERD_BIN)")
    p.add_argument("--out", default="faults-gpu-out", help="where the rows, samples and plot go")
    p.add_argument("--rows", default=",".join(ROWS), help=f"a comma-separated subset of {','.join(ROWS)}")
    p.add_argument("--soak-seconds", type=float, default=600.0)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--trials", type=int, default=3, help="trials of client_kill and daemon_kill")
    p.add_argument("--start-timeout", type=float, default=600.0,
                   help="seconds for clients to start (a cold JIT cache compiles every kernel first)")
    p.add_argument("--stop-timeout", type=float, default=300.0)
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        p.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    if args.clients < 2:
        p.error("--clients must be at least 2 (a victim and a survivor)")
    return args


def cuda_problem() -> Optional[str]:
    """Why this machine cannot run the suite's GPU rows, or None."""
    try:
        import torch
    except ImportError:
        return "torch is not importable"
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False"
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        import faulthandler
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # Client.stacks()
        return WORKERS[args.worker](args.seed)
    why = cuda_problem()
    if why is not None:
        print(f"faults_gpu: needs a CUDA GPU ({why}); the CPU rows are ctest's faults_cpu", file=sys.stderr)
        return 2
    if not args.ligerd_bin or not os.access(args.ligerd_bin, os.X_OK):
        print(f"faults_gpu: needs the built daemon: --ligerd-bin or $LIGERD_BIN ({args.ligerd_bin!r} is not an "
              f"executable)", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    cache = os.environ.get("LIGERD_CACHE_DIR", "").strip() or os.path.join(os.path.abspath(args.out), "cache")
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    runners = {"client_kill": row_client_kill, "daemon_kill": row_daemon_kill, "soak": row_soak}
    rows = []
    for name in args.rows:
        t0 = time.monotonic()
        try:
            rows.append(runners[name](args, cache))
        except Exception as e:  # noqa: BLE001  (a row that could not run is a failed row, not no table)
            import traceback
            traceback.print_exc()
            rows.append(Row(ROW_NAMES[name], failures=1, note=f"could not run: {type(e).__name__}: {e}"[:300]))
        print(f"faults_gpu: {rows[-1].scenario} done in {time.monotonic() - t0:.0f} s:\n"
              f"{format_table(rows[-1:]).splitlines()[1]}", file=sys.stderr, flush=True)
        write_rows(rows, args.out)  # so far: a run cut short keeps the rows it finished
    table = format_table(rows)
    print(f"\n{table}\n{summary_line(rows)}", flush=True)
    csv_path, json_path = write_rows(rows, args.out)
    print(f"faults_gpu: rows in {csv_path} and {json_path}")
    return exit_status(rows)


if __name__ == "__main__":
    sys.exit(main())
