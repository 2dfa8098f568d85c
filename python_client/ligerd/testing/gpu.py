"""Helpers shared by the GPU tests (tests/gpu/test_*.py import them; fixtures are in its conftest.py).

A test module starts with

    import pytest
    from ligerd.testing.gpu import require_cuda
    torch = require_cuda()          # skips the whole module without torch or a CUDA device

before it imports ligerd (the *built* package, which has no ligerd._C without a build), and takes
what else it needs from here afterwards. Only what is the same in several modules lives here:
an op's own reference, inputs and tolerances stay beside its tests, with their reasoning.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

DEV = "cuda"
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
from ligerd.testing.reference.precision import TINY, U  # noqa: E402,F401  (re-exported)

# Where peer packages (liger_kernel) are installed when they are not in the environment itself,
# e.g. `pip install --target DIR` of a carried wheel: a setting, $LIGERD_PEER_SITE (tests/gpu/run.sh
# sets it); unset, peers come from the environment alone.
PEER_SITE = os.environ.get("LIGERD_PEER_SITE", "").strip() or None


# ------------------------------------------------------------------------------------------
# skipping

def require_cuda():
    """Skips the calling test module (at import) unless a CUDA device is present; returns torch.
    The skip is reported at the caller's line (this frame is hidden)."""
    __tracebackhide__ = True
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device", allow_module_level=True)
    return torch


def ligerd_bin():
    """$LIGERD_BIN (the built daemon; tests/gpu/run.sh sets it) if it names an executable, else None."""
    path = os.environ.get("LIGERD_BIN", "").strip()
    return path if path and os.access(path, os.X_OK) else None


def require_ligerd_bin() -> str:
    """ligerd_bin(), or skips the calling module."""
    __tracebackhide__ = True
    path = ligerd_bin()
    if path is None:
        pytest.skip("LIGERD_BIN does not name a built ligerd binary (tests/gpu/run.sh sets it)",
                    allow_module_level=True)
    return path


# ------------------------------------------------------------------------------------------
# parametrisation ids

def param_id(v):
    """torch.float32 -> "float32", (2, 37, 8191) -> "2x37x8191", anything else str()."""
    if isinstance(v, torch.dtype):
        return str(v).replace("torch.", "")
    if isinstance(v, tuple):
        return "x".join(map(str, v))
    return str(v)


# ------------------------------------------------------------------------------------------
# NaN poisoning: an output element a kernel forgets to write fails the comparison

def nan_like(shape, dtype):
    """A NaN-filled (contiguous) output buffer on the GPU."""
    return torch.full(shape, float("nan"), dtype=dtype, device=DEV)


def poison_allocator(*shapes_dtypes, workspace=True):
    """Fill and free blocks of the sizes the next allocations will ask for, so torch.empty()
    inside the op hands back NaN-filled memory (best effort: the caching allocator reuses the
    best-fitting free block of the same stream). workspace: also a 32 MiB block, for ops that
    take a workspace (the norms' backward partial sums)."""
    held = [torch.full(s, float("nan"), dtype=d, device=DEV) for s, d in shapes_dtypes]
    if workspace:
        held.append(torch.full((8 << 20,), float("nan"), dtype=torch.float32, device=DEV))
    del held


# ------------------------------------------------------------------------------------------
# comparison against a float64 reference

def assert_close(name, got, ref64, tol, ctx):
    """Elementwise |got - ref64| <= tol (a tensor of per-element bounds); every element finite."""
    got64 = got.detach().double()
    assert got64.shape == ref64.shape, f"{ctx}: {name} shape {tuple(got64.shape)} != {tuple(ref64.shape)}"
    finite = torch.isfinite(got64)
    if not bool(finite.all()):
        bad = (~finite).nonzero()[:3].tolist()
        raise AssertionError(f"{ctx}: {name} has {int((~finite).sum())} non-finite elements "
                             f"(poisoned output not written?), e.g. at {bad}")
    err = (got64 - ref64).abs()
    over = err - tol
    if bool((over > 0).any()):
        flat = int(over.flatten().argmax())
        idx = list(torch.unravel_index(torch.tensor(flat), over.shape))
        idx = tuple(int(i) for i in idx)
        raise AssertionError(
            f"{ctx}: {name}: {int((over > 0).sum())} of {over.numel()} elements out of tolerance; "
            f"worst at {idx}: got {got64[idx].item():.9g}, ref {ref64[idx].item():.9g}, "
            f"|err| {err[idx].item():.3g} > tol {tol[idx].item():.3g}")


def rel_err(got, ref) -> float:
    """Norm-wise relative error ||got - ref|| / ||ref|| (ref in float64)."""
    return float((got.double() - ref).norm() / ref.norm().clamp_min(1e-300))


# ------------------------------------------------------------------------------------------
# torch.compile against eager

def assert_compiled_rope_step(rope_fn, cos, sin, b, hq, hk, s, d, dtype, gen):
    """torch.compile(fullgraph) of an HF-style attention prologue against eager: q / k projection
    outputs [b, s, h * d] (random from ``gen``, ``dtype``, on cos's device) scaled, viewed
    [b, h, s, d] by transpose, ``rope_fn(q, k, cos, sin)``, reduced to a scalar; the scalar and
    both inputs' gradients. The RoPE kernels are the same in both; inductor fuses the casts and
    reductions around them differently (fewer bf16 roundings), so a bf16 ulp or two is allowed."""
    def f(xq, xk):
        q = (xq * 2).view(b, s, hq, d).transpose(1, 2)
        k = (xk * 2).view(b, s, hk, d).transpose(1, 2)
        oq, ok = rope_fn(q, k, cos, sin)
        return (oq.float() ** 2).sum() + ok.float().sum()

    xq = torch.randn(b, s, hq * d, device=cos.device, generator=gen).to(dtype).requires_grad_()
    xk = torch.randn(b, s, hk * d, device=cos.device, generator=gen).to(dtype).requires_grad_()
    torch._dynamo.reset()
    lc = torch.compile(f, fullgraph=True)(xq, xk)
    lc.backward()
    gc = (xq.grad.clone(), xk.grad.clone())
    xq.grad = xk.grad = None
    le = f(xq, xk)
    le.backward()
    torch.testing.assert_close(lc, le, rtol=1e-3, atol=1e-2)
    torch.testing.assert_close(gc[0], xq.grad, rtol=2 ** -6, atol=2 ** -6)
    torch.testing.assert_close(gc[1], xk.grad, rtol=2 ** -6, atol=2 ** -6)


# ------------------------------------------------------------------------------------------
# Liger-Kernel as a peer, when installed

def add_peer_site() -> None:
    if PEER_SITE and os.path.isdir(PEER_SITE) and PEER_SITE not in sys.path:
        sys.path.append(PEER_SITE)


def liger_peer(name, module="liger_kernel.transformers"):
    """``from module import name`` (PEER_SITE on sys.path), or skips the test."""
    add_peer_site()
    try:
        return getattr(importlib.import_module(module), name)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"liger_kernel not importable: {e}")


# ------------------------------------------------------------------------------------------
# a private daemon

class Daemon:
    """A ligerd on a private socket in a fresh temporary directory, started for a test (module).
    cache_dir: its JIT cache; None = a fresh one inside that directory (an empty tuning DB).
    socket: listen there instead (e.g. where a killed daemon listened: a restart on the same
    socket); args: more flags (e.g. --metrics_address=...)."""

    def __init__(self, binary: str, cache_dir=None, prefix="ligerd-test-", socket=None, args=()):
        from ligerd import _health
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.socket = socket if socket is not None else os.path.join(self.dir, "ligerd.sock")
        self.cache = cache_dir if cache_dir is not None else os.path.join(self.dir, "cache")
        self.log = open(os.path.join(self.dir, "ligerd.log"), "wb")
        self.proc = subprocess.Popen([binary, f"--socket={self.socket}", f"--cache_dir={self.cache}", *args],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        status = _health.wait_serving(self.socket, deadline=time.monotonic() + 30,
                                      alive=lambda: self.proc.poll() is None)
        if status != _health.SERVING:
            self.stop()
            raise RuntimeError(f"ligerd did not come up on {self.socket}: {self.log_tail()}")

    def log_tail(self, n=3000) -> str:
        if not self.log.closed:
            self.log.flush()
        with open(os.path.join(self.dir, "ligerd.log"), "rb") as f:
            return f.read().decode(errors="replace")[-n:]

    def serving(self) -> bool:
        from ligerd import _health
        return self.proc.poll() is None and _health.check(self.socket, timeout=1.0) == _health.SERVING

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


@contextlib.contextmanager
def module_daemon(binary: str, cache_dir=None, prefix="ligerd-test-"):
    """A Daemon that this process's sessions use for the duration of the block: LIGERD_SOCKET
    names it and LIGERD_AUTOSTART=0 (never fall back to some other daemon). On exit the sessions
    are closed while it is still up, it is stopped, both variables get their old values back, and
    a daemon that died during the block fails the test with its log."""
    import ligerd
    saved = {k: os.environ.get(k) for k in ("LIGERD_SOCKET", "LIGERD_AUTOSTART")}
    os.environ["LIGERD_AUTOSTART"] = "0"
    d = Daemon(binary, cache_dir=cache_dir, prefix=prefix)
    os.environ["LIGERD_SOCKET"] = d.socket
    try:
        yield d
    finally:
        ligerd.set_dispatch_mode(None)
        alive = d.proc.poll() is None
        d.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert alive, f"the module's daemon died during the tests:\n{d.log_tail()}"


@contextlib.contextmanager
def dispatch_pinned(mode: str, cache_dir=None, prefix="ligerd-test-"):
    """Dispatch pinned to ``mode`` for the block, for a module-scoped fixture parametrised over
    "local" and "remote" (a function-scoped one resetting the mode would undo the remote half's):
    "local", then the default again; "remote" on a private daemon (module_daemon on $LIGERD_BIN,
    skipping the tests without one). Yields the mode."""
    import ligerd
    if mode == "local":
        ligerd.set_dispatch_mode("local")
        yield "local"
        ligerd.set_dispatch_mode(None)
        return
    binary = require_ligerd_bin()
    with module_daemon(binary, cache_dir=cache_dir, prefix=prefix):
        ligerd.set_dispatch_mode("remote")
        yield "remote"


def assert_ran_in(mode: str) -> None:
    """The ops ran in ``mode``: remote records the device's session at its first op; a process
    whose session is local as a whole records no device (no op can go elsewhere)."""
    import ligerd
    info = ligerd.dispatch_info()
    dev = info["devices"].get(torch.cuda.current_device())
    ran = dev["mode"] if dev is not None else ("local" if info["mode"] == "local" else None)
    assert ran == mode, f"ops did not run in {mode} dispatch: {info}"


@contextlib.contextmanager
def daemon_for_local_module(prefix: str):
    """A private daemon for the remote-dispatch tests of a module whose dispatch is pinned to
    local (conftest's local_dispatch): module_daemon on $LIGERD_BIN (skipping those tests without
    one) with $LIGERD_CACHE_DIR's kernel cache (else a fresh one); local dispatch again after."""
    import ligerd
    binary = require_ligerd_bin()
    cache = os.environ.get("LIGERD_CACHE_DIR") or None
    with module_daemon(binary, cache_dir=cache, prefix=prefix) as d:
        yield d
    ligerd.set_dispatch_mode("local")  # back to the module's pinned mode

