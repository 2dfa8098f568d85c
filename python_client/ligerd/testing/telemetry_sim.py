"""A simulated training workload for ligerd's telemetry, for CPU tests and for looking at the
dashboard without a GPU: `jobs` reporters send what local-dispatch training processes would
(op counts with sampled GPU times and bytes, tokens, a falling loss, step times, peak memory, the
memory the fused loss saved) to a daemon, every `interval_s`, for `seconds`.

    python3 -m ligerd.testing.telemetry_sim --socket /path/ligerd.sock --seconds 60

The numbers are made up (their shapes look like a small Llama's step); nothing runs on a GPU.
``daemon_with_metrics`` starts the real ligerd to feed, with /metrics on a free loopback port."""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import re
import subprocess
import time
from pathlib import Path
from typing import Iterator, Sequence

from ligerd import _telemetry

# (op, dtype, bytes per call, GPU seconds per call): a small Llama layer's fused ops.
OPS = [("rms_norm_fwd", "bfloat16", 33_570_816, 28e-6), ("rms_norm_bwd", "bfloat16", 67_141_632, 61e-6),
       ("swiglu_fwd", "bfloat16", 176_160_768, 95e-6), ("swiglu_bwd", "bfloat16", 293_601_280, 160e-6),
       ("rope_fwd", "bfloat16", 33_554_432, 22e-6), ("rope_bwd", "bfloat16", 33_554_432, 23e-6),
       ("cross_entropy_fwd", "bfloat16", 262_668_288, 410e-6)]


class _Tensor:  # what the reporter reads of a tensor
    def __init__(self, nbytes: int, dtype: str):
        self.nbytes, self.dtype, self.is_cuda = nbytes, "torch." + dtype, False


def run(socket_path: str, seconds: float = 10.0, interval_s: float = 0.5, jobs=("llama-sft", "qwen-pretrain"),
        seed: int = 0) -> list:
    """Sends the simulated jobs' reports; returns their reporters (sent/dropped counts)."""
    rng = random.Random(seed)
    reporters = [_telemetry.Reporter(job=j, socket_path=socket_path, sample_every=0, start_thread=False) for j in jobs]
    t0 = time.monotonic()
    step = 0
    while time.monotonic() - t0 < seconds:
        step += 1
        for k, rep in enumerate(reporters):
            layers = 8 * (k + 1)
            for op, dtype, nbytes, gpu_s in OPS:
                calls = layers if not op.startswith("cross") else 1
                for _ in range(calls):
                    rep.run(op, [_Tensor(nbytes, dtype)], [], lambda *a: None)
                cell = rep._ops[(op, dtype)]
                cell.samples.append(gpu_s * rng.uniform(0.9, 1.15))  # as a sampled CUDA event pair would
                cell.sampled_bytes += nbytes
            step_s = interval_s * rng.uniform(0.95, 1.05)
            tokens = 16384 * (2 - k)
            loss = 2.0 + 8.0 * math.exp(-step / (12.0 + 8 * k)) + rng.uniform(-0.05, 0.05)
            rep.report_step(tokens=tokens, loss=loss, step_seconds=step_s,
                            peak_allocated_bytes=int((18 + 10 * k + rng.uniform(0, 0.5)) * 2**30))
            rep._memory_saved = int((3.7 + k) * 2**30)
            rep.flush()
        time.sleep(interval_s)
    return reporters


@contextlib.contextmanager
def daemon_with_metrics(exe, workdir, args: Sequence[str] = (), timeout_s: float = 10.0) -> Iterator[dict]:
    """The real ligerd (``exe``) on a socket under ``workdir`` with /metrics on a free loopback
    port: yields {"url", "socket", "proc", "tmp"}; stops it on exit. RuntimeError (with ligerd's
    log) when it does not say where /metrics is within ``timeout_s``."""
    workdir = Path(workdir)
    sock = workdir / "run" / "ligerd.sock"
    log_path = workdir / "ligerd.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(exe), f"--socket={sock}", f"--cache_dir={workdir / 'cache'}",
                                 "--metrics_address=127.0.0.1:0", *args],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            url = None
            deadline = time.monotonic() + timeout_s
            while url is None and time.monotonic() < deadline and proc.poll() is None:
                m = re.search(r"metrics on (http://127\.0\.0\.1:\d+)/metrics", log_path.read_text())
                url = m.group(1) if m else None
                time.sleep(0.05)
            if url is None:
                raise RuntimeError("ligerd did not say where /metrics is:\n" + log_path.read_text())
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            yield {"url": url, "socket": str(sock), "proc": proc, "tmp": workdir}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--socket", required=True, help="ligerd's control socket")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--interval", type=float, default=0.5)
    a = p.parse_args()
    reps = run(a.socket, a.seconds, a.interval)
    print("; ".join(f"{r.job}: {r.sent_reports} reports sent, {r.dropped_reports} dropped ({r.last_error})" for r in reps))


if __name__ == "__main__":
    main()
