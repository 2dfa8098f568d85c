"""Remote dispatch from Python: ops run by the daemon on this process's tensors (CUDA IPC, shared-
memory ring, stream flags) give bitwise the results of local dispatch; several clients share one
daemon; a client killed mid-stream or a bad input does not hurt the daemon; a killed daemon is
reported within 2 s and leaves nothing hanging.

Run by tests/gpu/run.sh (PYTHONPATH=<build>/python, LIGERD_BIN=<build>/server/ligerd). Skips
without CUDA or without LIGERD_BIN. Each module (and each test that kills a daemon) starts its own
daemon on a private socket. MPS is not needed for correctness (the daemon serves remote sessions
without it, only slower). PYTORCH_CUDA_ALLOC_CONF=expandable_segments must be unset: VMM
allocations cannot be shared by CUDA IPC.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest
from ligerd.testing.gpu import require_cuda, require_ligerd_bin

torch = require_cuda()
LIGERD_BIN = require_ligerd_bin()

import ligerd  # noqa: E402
from ligerd import _backend  # noqa: E402
from ligerd.transformers import liger_rms_norm  # noqa: E402

from ligerd.testing import gpu as _util  # noqa: E402
from ligerd.testing.gpu import DEV, param_id  # noqa: E402

EPS = 1e-6
SHAPES = [(1, 1), (3, 5120), (4096, 4096), (2, 37, 8191)]
# The JIT cache the local executor of this process uses too (tests/gpu/run.sh sets it), so both
# sides run the same cubins; without it, a private one.
CACHE = os.environ.get("LIGERD_CACHE_DIR") or tempfile.mkdtemp(prefix="ligerd-remote-cache-")


def start_daemon() -> _util.Daemon:
    """A ligerd on a private socket (_util.Daemon), on the shared JIT cache, started for a test
    (module)."""
    return _util.Daemon(LIGERD_BIN, cache_dir=CACHE, prefix="ligerd-remote-test-")


def use(daemon: _util.Daemon, mode: str) -> None:
    """Point this process at ``daemon`` in ``mode`` (a fresh session: the old one is closed)."""
    os.environ["LIGERD_SOCKET"] = daemon.socket
    ligerd.set_dispatch_mode(mode)


@pytest.fixture(scope="module")
def daemon():
    with _util.module_daemon(LIGERD_BIN, cache_dir=CACHE, prefix="ligerd-remote-test-") as d:
        yield d


def assert_remote():
    info = ligerd.dispatch_info()
    dev = info["devices"].get(torch.cuda.current_device())
    assert dev is not None and dev["mode"] == "remote", f"ops did not run remotely: {info}"


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view({2: torch.int16, 4: torch.int32}[t.element_size()])


def assert_bitwise(name, a, b, ctx):
    assert a.shape == b.shape and a.dtype == b.dtype, f"{ctx}: {name}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
    diff = bits(a.reshape(-1)) != bits(b.reshape(-1))
    if bool(diff.any()):
        idx = [int(diff.nonzero()[0])]
        a, b = a.reshape(-1), b.reshape(-1)
        raise AssertionError(f"{ctx}: {name}: {int(diff.sum())} of {a.numel()} elements differ between "
                             f"remote and local; first at {idx}: remote {a[tuple(idx)].item()!r}, "
                             f"local {b[tuple(idx)].item()!r}")


def fwd_bwd(x, w, dy, mode, in_place):
    xr = x.clone().requires_grad_(True)
    wr = w.clone().requires_grad_(True) if w is not None else None
    y = liger_rms_norm(xr, wr, EPS, 1.0 if mode == "gemma" else 0.0, mode, in_place)
    y.backward(dy.clone())
    torch.cuda.synchronize()
    return y.detach(), xr.grad, (wr.grad if wr is not None else None)


# ------------------------------------------------------------------------------------------------
# 1. Remote == local, bit for bit


@pytest.mark.parametrize("shape", SHAPES, ids=param_id)
@pytest.mark.parametrize("in_place", [True, False], ids=["inplace", "out"])
@pytest.mark.parametrize("has_w", [True, False], ids=["w", "now"])
@pytest.mark.parametrize("mode", ["llama", "gemma"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_remote_bitwise_equals_local(daemon, dtype, mode, has_w, in_place, shape):
    g = torch.Generator(device=DEV).manual_seed(hash((str(dtype), mode, has_w, shape)) & 0xFFFF)
    x = torch.randn(shape, device=DEV, generator=g).to(dtype)
    w = (1 + 0.1 * torch.randn(shape[-1], device=DEV, generator=g)).to(dtype) if has_w else None
    dy = torch.randn(shape, device=DEV, generator=g).to(dtype)
    ctx = f"{dtype} {mode} w={has_w} in_place={in_place} {shape}"
    use(daemon, "local")
    y_l, dx_l, dw_l = fwd_bwd(x, w, dy, mode, in_place)
    use(daemon, "remote")
    # Poison what the caching allocator hands out next, so an unwritten output cannot match.
    torch.full((max(x.numel(), 1) * 4,), float("nan"), device=DEV, dtype=dtype)
    y_r, dx_r, dw_r = fwd_bwd(x, w, dy, mode, in_place)
    assert_remote()
    assert_bitwise("Y", y_r, y_l, ctx)
    assert_bitwise("dX", dx_r, dx_l, ctx)
    if has_w:
        assert_bitwise("dW", dw_r, dw_l, ctx)


@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_remote_fused_linear_cross_entropy_equals_local(daemon, bias):
    """The fused linear loss in a remote session: its GEMMs run on ligerd's cuBLASLt handle, its
    cross-entropy on ligerd's kernels; the loss and all three gradients match local dispatch.
    Not bitwise: each process times its own GEMM algorithms (kernels/blas/lt_gemm.h), and two
    algorithms (tilings, split-K) sum the fp32 partial products in different orders, so a bf16
    result may differ by an ulp of its rounding (2^-8 relative). Tolerance: 2^-7 relative, plus
    1e-3 of the tensor's largest magnitude for elements near zero (a sum of cancelling terms)."""
    from ligerd.transformers import liger_fused_linear_cross_entropy
    g = torch.Generator(device=DEV).manual_seed(7)
    bt, H, V = 1000, 512, 32000  # 8 chunks (128 tokens each: the chunk rule's minimum)
    x = torch.randn(bt, H, device=DEV, generator=g).bfloat16()
    w = (0.05 * torch.randn(V, H, device=DEV, generator=g)).bfloat16()
    b = (0.1 * torch.randn(V, device=DEV, generator=g)).bfloat16() if bias else None
    t = torch.randint(0, V, (bt,), device=DEV, generator=g)
    t[::7] = -100

    def run():
        xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        br = b.clone().requires_grad_(True) if bias else None
        loss = liger_fused_linear_cross_entropy(xr, wr, t, br)
        loss.backward()
        torch.cuda.synchronize()
        return [loss.detach(), xr.grad, wr.grad] + ([br.grad] if bias else [])

    use(daemon, "local")
    local = run()
    use(daemon, "remote")
    torch.full((bt * V,), float("nan"), device=DEV, dtype=torch.bfloat16)
    remote = run()
    assert_remote()
    for name, r, l in zip(["loss", "dX", "dW", "db"], remote, local):
        assert torch.isfinite(r).all(), f"fused linear cross-entropy bias={bias}: remote {name} not finite"
        torch.testing.assert_close(r.float(), l.float(), rtol=2**-7, atol=1e-3 * float(l.float().abs().max()),
                                   msg=lambda m: f"fused linear cross-entropy bias={bias}, {name}: {m}")


def test_remote_on_a_side_stream_and_many_ops(daemon):
    """Ops queued back to back on a non-default stream, results read only after a synchronize."""
    use(daemon, "remote")
    x = torch.randn(64, 1024, device=DEV, dtype=torch.bfloat16)
    w = torch.rand(1024, device=DEV, dtype=torch.bfloat16)
    expected = liger_rms_norm(x, w, EPS)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        outs = [liger_rms_norm(x, w, EPS) for _ in range(500)]
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    assert_remote()
    for o in outs[::50]:
        assert_bitwise("Y", o, expected, "side stream")


# ------------------------------------------------------------------------------------------------
# 2. Several clients, and a client that dies

CLIENT = textwrap.dedent("""
    import os, sys, time, torch, ligerd
    from ligerd.transformers import liger_rms_norm
    seconds = float(sys.argv[1])
    torch.manual_seed(os.getpid())
    x = torch.randn(512, 4096, device="cuda", dtype=torch.bfloat16)
    w = torch.rand(4096, device="cuda", dtype=torch.bfloat16)
    ligerd.set_dispatch_mode("local")
    expected = liger_rms_norm(x, w, 1e-6)
    ligerd.set_dispatch_mode("remote")
    n, t0 = 0, time.monotonic()
    while True:
        y = liger_rms_norm(x, w, 1e-6)
        n += 1
        if n == 1:
            torch.cuda.synchronize()
            print("started", flush=True)
        if n % 50 == 0:
            torch.cuda.synchronize()
            assert torch.equal(y.view(torch.int16), expected.view(torch.int16)), "remote != local"
        if seconds >= 0 and time.monotonic() - t0 > seconds:
            break
    torch.cuda.synchronize()
    assert torch.equal(y.view(torch.int16), expected.view(torch.int16)), "remote != local"
    dev = ligerd.dispatch_info()["devices"][0]
    assert dev["mode"] == "remote", dev
    print("OK", n, flush=True)
""")


def start_client(daemon, seconds):
    env = dict(os.environ, LIGERD_SOCKET=daemon.socket, LIGERD_AUTOSTART="0")
    return subprocess.Popen([sys.executable, "-c", CLIENT, str(seconds)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(p, timeout=120):
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0 and "OK" in out, f"client exited {p.returncode}:\n{out[-3000:]}"
    return out


def test_two_clients_at_once(daemon):
    a, b = start_client(daemon, 3.0), start_client(daemon, 3.0)
    finish(a)
    finish(b)
    assert daemon.serving()


def test_client_killed_mid_stream_leaves_daemon_serving(daemon):
    survivor = start_client(daemon, 6.0)
    victim = start_client(daemon, -1)  # runs until killed
    line = victim.stdout.readline()
    assert "started" in line, f"victim client did not start: {line}{victim.stdout.read()[-3000:]}"
    time.sleep(0.5)  # mid-stream: ops in its ring, mappings open
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    time.sleep(1.5)  # the daemon tears the dead session down (within a second)
    assert daemon.serving(), daemon.log_tail()
    finish(survivor)
    finish(start_client(daemon, 0.5))  # a new client after the kill
    use(daemon, "remote")  # and this process too
    x = torch.randn(8, 256, device=DEV)
    y = liger_rms_norm(x, None, EPS)
    torch.cuda.synchronize()
    assert_remote()
    assert torch.isfinite(y).all()
    assert daemon.serving()


# ------------------------------------------------------------------------------------------------
# 3. Bad inputs


@pytest.mark.parametrize("case", ["wrong_weight_size", "cpu_tensor", "mixed_dtypes"])
def test_bad_inputs_raise_and_daemon_stays_up(daemon, case):
    use(daemon, "remote")
    x = torch.randn(4, 64, device=DEV, dtype=torch.bfloat16)
    w = torch.ones(64, device=DEV, dtype=torch.bfloat16)
    if case == "wrong_weight_size":
        args = (x, torch.ones(63, device=DEV, dtype=torch.bfloat16))
    elif case == "cpu_tensor":
        args = (x.cpu(), w.cpu())
    else:
        args = (x, torch.ones(64, device=DEV, dtype=torch.float16))
    with pytest.raises(ligerd.OpInputError) as ei:
        liger_rms_norm(*args, EPS)
    assert "rms_norm" in str(ei.value)
    y = liger_rms_norm(x, w, EPS)  # the session (and daemon) still work
    torch.cuda.synchronize()
    assert torch.isfinite(y.float()).all()
    assert daemon.serving()


def test_bad_input_found_by_the_daemon(daemon):
    """Past the Python checks (straight to the backend): the daemon rejects the record; the error is
    asynchronous, raised by a later op naming rms_norm_fwd; the next op gets a fresh session."""
    use(daemon, "remote")
    x = torch.randn(4, 64, device=DEV)
    y = torch.empty_like(x)
    rstd = torch.empty(4, device=DEV)
    liger_rms_norm(x, None, EPS)  # opens the session
    _backend.launch("rms_norm_fwd", [x, torch.ones(63, device=DEV), y, rstd], [EPS, 0.0, 0.0])
    err, t0 = None, time.monotonic()
    while err is None and time.monotonic() - t0 < 2.0:
        try:
            liger_rms_norm(x, None, EPS)
            torch.cuda.synchronize()
        except ligerd.LigerdError as e:
            err = e
    assert err is not None, "the daemon's error was never raised"
    assert isinstance(err, ligerd.OpInputError), repr(err)
    assert err.op == "rms_norm_fwd" and "rms_norm_fwd" in str(err)
    out = liger_rms_norm(x, None, EPS)
    torch.cuda.synchronize()
    assert_remote()
    assert torch.isfinite(out).all()
    assert daemon.serving()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_tensor_on_another_device(daemon):
    use(daemon, "remote")
    x = torch.randn(4, 64, device="cuda:0")
    with pytest.raises(ligerd.OpInputError, match="rms_norm"):
        liger_rms_norm(x, torch.ones(64, device="cuda:1"), EPS)
    assert daemon.serving()


# ------------------------------------------------------------------------------------------------
# 4. The daemon dies


def test_daemon_killed_is_reported_within_2s_and_nothing_hangs(daemon):
    victim = start_daemon()
    try:
        use(victim, "remote")
        x = torch.randn(256, 4096, device=DEV, dtype=torch.bfloat16)
        w = torch.ones(4096, device=DEV, dtype=torch.bfloat16)
        for _ in range(10):
            liger_rms_norm(x, w, EPS)
        torch.cuda.synchronize()
        assert_remote()
        victim.stop(signal.SIGKILL)
        t0 = time.monotonic()
        err = None
        while time.monotonic() - t0 < 5.0:
            try:
                liger_rms_norm(x, w, EPS)
            except ligerd.DaemonUnavailableError as e:
                err = e
                break
            time.sleep(0.01)
        elapsed = time.monotonic() - t0
        assert err is not None, "no DaemonUnavailableError 5 s after the daemon was killed"
        assert elapsed <= 2.0, f"the dead daemon was reported after {elapsed:.2f} s (limit 2 s)"
        # Streams that waited on the daemon were released: synchronize returns.
        done = threading.Event()
        threading.Thread(target=lambda: (torch.cuda.synchronize(), done.set()), daemon=True).start()
        assert done.wait(10), "torch.cuda.synchronize() hangs after the daemon died"
        with pytest.raises(ligerd.DaemonUnavailableError):  # and it stays reported
            liger_rms_norm(x, w, EPS)
    finally:
        victim.stop(signal.SIGKILL)
        use(daemon, "remote")  # closes the dead session; back to the module's daemon
