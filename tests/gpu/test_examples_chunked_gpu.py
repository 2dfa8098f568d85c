"""The ligerd.chunked_loss examples (examples/align_dpo.py, distill_jsd.py, grpo_step.py) on the GPU,
as the README runs them, at their GPU defaults (the small LLaMA, vocabulary 32000, bf16) with a few
steps, in local dispatch and in remote dispatch against a private daemon (both need $LIGERD_BIN,
which tests/gpu/run.sh sets; the built package on PYTHONPATH, as for the rest of this suite).

Each must exit 0 with its one-step check passed (ligerd's fused loss against the unfused torch loss,
both judged against float64 with the tolerances of tests/gpu/test_chunked_loss.py), report the
dispatch mode asked for, and measure a smaller peak for ligerd's loss step than for torch's
unfused one (which holds the whole [tokens, V] logits in bf16 and fp32)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

from ligerd.testing import gpu as _util  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

# One run per example (each is a fresh process: ~10 s of imports); the other losses' kernels
# paths are tests/gpu/test_chunked_loss.py's.
RUNS = [("align_dpo.py", ["--loss", "dpo"]), ("distill_jsd.py", ["--teacher-steps", "5"]),
        ("grpo_step.py", ["--loss-type", "grpo"])]


@pytest.fixture(scope="module", params=["local", "remote"])
def dispatch(request):
    binary = _util.ligerd_bin()
    if binary is None:
        pytest.skip("LIGERD_BIN does not name a built ligerd binary (tests/gpu/run.sh sets it)")
    if request.param == "local":
        yield "local", {"LIGERD_BIN": binary}
        return
    with _util.module_daemon(binary, prefix="ligerd-examples-test-") as d:
        yield "remote", {"LIGERD_SOCKET": d.socket, "LIGERD_AUTOSTART": "0"}


@pytest.mark.parametrize("script,argv", RUNS, ids=[f"{s[:-3]}-{a[1]}" for s, a in RUNS])
def test_example_on_the_gpu(dispatch, script, argv):
    mode, extra = dispatch
    env = dict(os.environ, **extra)
    env.pop("LIGERD_CHUNKED_LOSS_CHUNK", None)
    cmd = [sys.executable, str(EXAMPLES / script), "--device", "cuda", "--dispatch", mode, "--steps", "3", *argv]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=str(ROOT))
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"{' '.join(cmd)} exited {p.returncode}:\n{out[-6000:]}"
    assert "one-step check: passed" in out and "TOO FAR" not in out, out[-6000:]
    assert f"dispatch: {mode}" in out, out[-6000:]
    m = re.search(r"ligerd ([0-9.]+) MiB, unfused torch ([0-9.]+) MiB", out)
    assert m, out[-6000:]
    ours, torch_mib = float(m.group(1)), float(m.group(2))
    assert ours < torch_mib, f"ligerd's loss step peaked at {ours} MiB, torch's unfused at {torch_mib} MiB"
