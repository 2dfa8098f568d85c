"""ligerd under torch.compile and CUDA graphs on the GPU, in local and remote dispatch: a tiny
Llama patched by apply_liger_kernel_to_llama (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy)
trained a few steps

- eagerly (the yardstick),
- compiled whole with ``torch.compile(model, fullgraph=True)`` (default mode, Inductor),
- compiled with ``mode="reduce-overhead"`` (CUDA graphs through cudagraph trees; no graph may be
  skipped), also with gradient accumulation (num_items_in_batch),
- captured by hand: forward, backward and the optimizer step in one ``torch.cuda.graph``,
  replayed on new batches (the attention mask and position ids that transformers would build
  on the host in each forward are built before the capture: ligerd.testing.cuda_graph),

each giving the eager per-step losses and final weights. In remote dispatch, ops captured into a
graph run in this process (a graph replay writes no ring records for the daemon; see
ligerd/_backend.py): the run warns once and still matches. Where ops ran is read from the session
(dispatch_info) and from telemetry's count of this process's launches (local dispatch needs no
daemon, and settles no device). Also: the compiled fused loss peaks
at the eager fused loss's memory (no second copy of its gradients), ligerd's telemetry thread
does not break a capture in progress, and an op that fails inside a remote session's capture says
what was captured and why it ran in this process.

Tolerances: fp32 with TF32 off. ligerd's launches are the same in every variant (the compiled
fused loss scales its saved gradients in fp32 and rounds once, as the eager in-place kernel
does), but Inductor fuses and reorders the model's other fp32 ops (residual adds, attention's
softmax, the embedding backward's sums), and remote dispatch inside a capture may pick another
cuBLASLt algorithm for the fused loss's GEMMs: a few fp32 ulps per op, grown by 6 optimizer
steps. Losses within 1e-4 relative, and each weight's update within 1e-3 of eager's (norm-wise),
are far below a real defect (a wrong gradient scale or a stale replay moves the loss in its 2nd-3rd
digit and the updates by percents).

Run by tests/gpu/run.sh (remote needs LIGERD_BIN, which it sets); alone:
    PYTHONPATH=<build>/python LIGERD_BIN=<build>/server/ligerd python3 -m pytest tests/gpu/test_compile.py
PYTORCH_CUDA_ALLOC_CONF=expandable_segments must be unset for remote dispatch (CUDA IPC).
"""

from __future__ import annotations

import copy
import os
import tempfile

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()
transformers = pytest.importorskip("transformers", reason="transformers is not installed")

import ligerd  # noqa: E402
import ligerd.transformers as lt  # noqa: E402
from ligerd import _backend, _errors  # noqa: E402
from ligerd.testing import convergence as cv  # noqa: E402
from ligerd.testing import gpu as _util  # noqa: E402
from ligerd.testing.cuda_graph import reset_capture_state, static_forward_inputs  # noqa: E402
from ligerd.testing.gpu import DEV  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_tf32")  # conftest.py

SIZES = dict(hidden=256, layers=2, vocab=1000, heads=4, kv_heads=2, intermediate=512)
BATCH, SEQ, STEPS, LR = 4, 64, 6, 1e-3
LOSS_RTOL = 1e-4
# torch's embedding backward sums the rows of repeated tokens with atomic adds, in an order that
# changes from run to run, so six fp32 steps part by ~1e-3 (embed_tokens' update: 1.15e-3 once,
# with gradient accumulation under reduce-overhead); a wrong accumulation scale is off by >10%.
UPDATE_RTOL = 3e-3
CACHE = os.environ.get("LIGERD_CACHE_DIR") or tempfile.mkdtemp(prefix="ligerd-compile-cache-")


# ------------------------------------------------------------------------------------------
# dispatch: local, or remote through a private daemon started for the module


@pytest.fixture(scope="module")
def daemon():
    binary = _util.ligerd_bin()
    if binary is None:
        pytest.skip("LIGERD_BIN does not name a built ligerd binary (tests/gpu/run.sh sets it)")
    with _util.module_daemon(binary, cache_dir=CACHE, prefix="ligerd-compile-test-") as d:
        yield d


@pytest.fixture(params=["local", "remote"])
def dispatch(request):
    if request.param == "remote":
        request.getfixturevalue("daemon")
    ligerd.set_dispatch_mode(request.param)
    yield request.param
    ligerd.set_dispatch_mode(None)


def local_launches():
    """ligerd ops run in this process so far: the telemetry reporter counts every local launch
    (captured remote ones included), with or without a daemon (ligerd/_telemetry.py); None when
    telemetry is off (LIGERD_TELEMETRY=0)."""
    from ligerd import _telemetry
    rep = _telemetry.get()
    return None if rep is None else sum(rep._calls_by_op.values())


def assert_dispatch(mode, before, *, in_process):
    """Where the ops since ``before`` (local_launches() then) ran. Local: the session is local
    (it asks no daemon and settles no device, so dispatch_info()'s "devices" stays empty; a
    daemon is not needed) and ops ran in this process. Remote: the device's session is remote,
    and ops ran in this process exactly when ``in_process`` (captured ones)."""
    info = ligerd.dispatch_info()
    now = local_launches()
    here = None if now is None or before is None else now - before
    if mode == "local":
        assert info["mode"] == "local", f"ops did not run locally: {info}"
        assert here is None or here > 0, f"no ligerd op ran in this process: {info}"
        return
    dev = info["devices"].get(torch.cuda.current_device())
    assert dev is not None and dev["mode"] == mode, f"ops did not run {mode}: {info}"
    if here is not None:
        if in_process:
            assert here > 0, "no captured op ran in this process"
        else:
            assert here == 0, f"{here} ligerd launches ran in this process, none was captured: {info}"


def expect_in_process_warning(mode):
    """Remote: the first captured op warns (once per device and process: forget earlier ones)."""
    for key in [k for k in _errors._warned if k.startswith("capture-in-process-")]:
        _errors._warned.discard(key)
    if mode == "remote":
        return pytest.warns(ligerd.LigerdWarning, match="cannot be captured")
    import contextlib
    return contextlib.nullcontext()


# ------------------------------------------------------------------------------------------
# the model, the data, the training variants


@pytest.fixture(scope="module")
def model_and_init():
    lt.revert_liger_kernel_patches()
    lt.apply_liger_kernel_to_llama()
    cfg = cv.mini_config("llama", **SIZES)
    model = cv.build(cfg, torch.float32, DEV)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    data, _ = cv.make_data(SIZES["vocab"], STEPS, BATCH, SEQ, subset=256)
    data = [(x.to(DEV), y.to(DEV)) for x, y in data]
    # batches of 2 x BATCH for 2 micro-batches of BATCH rows: the compiled graphs' shapes again
    acc, _ = cv.make_data(SIZES["vocab"], STEPS, 2 * BATCH, SEQ, seed=99, subset=256)
    acc = [(x.to(DEV), y.to(DEV)) for x, y in acc]
    yield model, init, data, acc
    lt.revert_liger_kernel_patches()


def _params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def train_eager_or_compiled(model, init, data, *, mode=None, optimizer="adamw", micro_batches=1):
    """Per-step losses and final weights; the model compiled (fullgraph) in ``mode`` unless None.
    With ``micro_batches`` > 1 each step accumulates over that many micro-batches with
    transformers' num_items_in_batch, into .grad buffers allocated (zeroed) before the first step
    and zeroed in place after each: under reduce-overhead a .grad first allocated by a replayed
    backward lives in the graph's memory, which the next micro-batch's replay overwrites (torch's
    rule for cudagraph trees; docs/compile.md)."""
    model.load_state_dict(init)
    model.train()
    model.zero_grad(set_to_none=True)
    fwd = model if mode is None else torch.compile(model, fullgraph=True, mode=mode)
    opt = (torch.optim.AdamW(model.parameters(), lr=LR, foreach=False) if optimizer == "adamw" else
           torch.optim.SGD(model.parameters(), lr=LR * 30, foreach=False))
    accumulate = micro_batches > 1
    if accumulate:
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
    losses = []
    for x, y in data:
        n_items = torch.tensor(float((y[:, 1:] != -100).sum()), device=DEV) if accumulate else None
        total = 0.0
        for xs, ys in zip(x.chunk(micro_batches), y.chunk(micro_batches)):
            kw = {"num_items_in_batch": n_items} if accumulate else {}
            out = fwd(input_ids=xs, labels=ys, use_cache=False, **kw)
            out.loss.backward()
            total += float(out.loss.detach())  # read before the next replay overwrites it
        losses.append(total)
        opt.step()
        opt.zero_grad(set_to_none=not accumulate)
    torch.cuda.synchronize()
    return losses, _params(model)


def train_cuda_graph(model, init, data):
    """Forward, backward and an SGD step captured as one CUDA graph, replayed per batch (torch's
    whole-network capture recipe: warm-up on a side stream, grads None before the capture). The
    attention mask and position ids are built before the capture and passed to every call
    (ligerd.testing.cuda_graph): transformers builds them on the host in each forward, which a
    capture cannot take (5.17's eager mask copies a CPU scalar to the GPU).

    The captured model is a deep copy: its parameters are new leaves, whose gradient
    accumulators are made in the side-stream warm-up. The module's model has been trained on the
    default stream by the earlier tests, and an accumulator made there and still alive (torch
    keeps it while any graph holding it lives) would put the captured backward's accumulation on
    the legacy stream, which a capture refuses (cudaErrorStreamCaptureImplicit)."""
    model = copy.deepcopy(model)
    model.load_state_dict(init)
    model.train()
    model.zero_grad(set_to_none=True)
    opt = torch.optim.SGD(model.parameters(), lr=LR * 30, foreach=False)
    sx, sy = data[0][0].clone(), data[0][1].clone()
    static = static_forward_inputs(model, sx)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):  # warm-up: no optimizer step, so the weights stay at init
            model(input_ids=sx, labels=sy, use_cache=False, **static).loss.backward()
            opt.zero_grad(set_to_none=True)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph, stream=s):
            static_loss = model(input_ids=sx, labels=sy, use_cache=False, **static).loss
            static_loss.backward()
            opt.step()
    except Exception:
        reset_capture_state(s)  # so that the later tests' RNG calls work
        raise
    losses = []
    for x, y in data:
        sx.copy_(x)
        sy.copy_(y)
        graph.replay()
        losses.append(float(static_loss.detach()))
    torch.cuda.synchronize()
    params = _params(model)
    del graph
    opt.zero_grad(set_to_none=True)
    return losses, params


def assert_same_training(got, ref, init, what):
    """Per-step losses within LOSS_RTOL; per parameter, the training update (final - initial)
    within UPDATE_RTOL of eager's, norm-wise."""
    (losses, params), (ref_losses, ref_params) = got, ref
    assert ref_losses[-1] < ref_losses[0], f"the eager run does not train: {ref_losses}"
    assert len(losses) == len(ref_losses)
    for i, (a, b) in enumerate(zip(losses, ref_losses)):
        assert abs(a - b) <= LOSS_RTOL * abs(b), f"{what}: step {i}: loss {a!r} vs eager {b!r}\n{losses}\n{ref_losses}"
    for name, p in ref_params.items():
        upd_ref, upd = p - init[name], params[name] - init[name]
        d = float((upd - upd_ref).norm() / upd_ref.norm().clamp_min(1e-30))
        assert d <= UPDATE_RTOL, f"{what}: {name}: its update differs from eager's by {d:.3g} (relative)"


# ------------------------------------------------------------------------------------------
# the tests


def test_compile_fullgraph_default_mode(model_and_init, dispatch):
    model, init, data, _ = model_and_init
    torch._dynamo.reset()
    before = local_launches()
    ref = train_eager_or_compiled(model, init, data)
    assert_dispatch(dispatch, before, in_process=False)
    before = local_launches()
    got = train_eager_or_compiled(model, init, data, mode="default")
    assert_dispatch(dispatch, before, in_process=False)
    assert_same_training(got, ref, init, f"torch.compile(fullgraph) {dispatch}")


def test_compile_reduce_overhead(model_and_init, dispatch):
    """cudagraph trees: step 1 warms up, step 2 records, later steps replay. No graph may be
    skipped (a ligerd op that cudagraphs cannot take would show here as a skip)."""
    from torch._dynamo.utils import counters
    model, init, data, acc = model_and_init
    torch._dynamo.reset()
    ref = train_eager_or_compiled(model, init, data)
    counters.clear()
    before = local_launches()
    with expect_in_process_warning(dispatch):
        got = train_eager_or_compiled(model, init, data, mode="reduce-overhead")
    skips = dict(counters["inductor"])
    assert not skips.get("cudagraph_skips"), f"cudagraphs skipped a graph: {skips}"
    assert_dispatch(dispatch, before, in_process=True)  # remote: only captured ops ran in process
    assert_same_training(got, ref, init, f"reduce-overhead {dispatch}")
    # gradient accumulation (2 micro-batches, num_items_in_batch: the fused loss's mean divisor
    # as a tensor input of the graph), .grad allocated before the first replay
    ref = train_eager_or_compiled(model, init, acc, micro_batches=2)
    got = train_eager_or_compiled(model, init, acc, mode="reduce-overhead", micro_batches=2)
    assert_same_training(got, ref, init, f"reduce-overhead, gradient accumulation, {dispatch}")


def test_manual_cuda_graph_training_step(model_and_init, dispatch):
    model, init, data, _ = model_and_init
    ref = train_eager_or_compiled(model, init, data, optimizer="sgd")
    before = local_launches()
    with expect_in_process_warning(dispatch):
        got = train_cuda_graph(model, init, data)
    assert_dispatch(dispatch, before, in_process=True)
    assert_same_training(got, ref, init, f"torch.cuda.graph {dispatch}")


def test_compiled_fused_loss_peaks_at_eager_memory():
    """The traced fused loss returns its gradients from the forward and scales them in the
    backward out of place; Inductor writes that product into the saved gradients themselves
    (AOTAutograd donates them), so the compiled loss holds no second dW (V x H) or dx."""
    from ligerd.transformers import liger_fused_linear_cross_entropy
    ligerd.set_dispatch_mode("local")
    torch._dynamo.reset()
    g = torch.Generator(device=DEV).manual_seed(4)
    bt, H, V = 4096, 1024, 32000
    x0 = torch.randn(bt, H, device=DEV, generator=g).bfloat16()
    W0 = (0.03 * torch.randn(V, H, device=DEV, generator=g)).bfloat16()
    t = torch.randint(0, V, (bt,), device=DEV, generator=g)

    def step(fn):
        x, W = x0.clone().requires_grad_(), W0.clone().requires_grad_()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn(x, W).backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base, x.grad, W.grad

    def loss(x, W):
        return liger_fused_linear_cross_entropy(x, W, t) * 0.5  # grad_output 0.5: the scaling runs

    compiled = torch.compile(loss, fullgraph=True)
    step(compiled)  # compile
    eager_peak, ex, eW = step(loss)
    peak, cx, cW = step(compiled)
    ligerd.set_dispatch_mode(None)
    # The same GEMMs and kernels; the grad_output scaling is an fp32 multiply rounded once in both
    # (Inductor's kernel, the eager in-place one): equal to a bf16 rounding at most.
    torch.testing.assert_close(cx, ex, rtol=2 ** -7, atol=1e-6)
    torch.testing.assert_close(cW, eW, rtol=2 ** -7, atol=1e-6)
    slack = 2 << 20  # per-token vectors and allocator rounding
    assert peak <= eager_peak + slack, (f"compiled fused loss peaks at {peak / 2**20:.1f} MiB beyond its "
                                        f"inputs, eager at {eager_peak / 2**20:.1f} MiB (dW alone is "
                                        f"{V * H * 2 / 2**20:.0f} MiB)")


def test_telemetry_thread_does_not_break_a_global_capture(monkeypatch):
    """ligerd's telemetry reporter reads the CUDA events of timed launches from its own thread. In
    torch.cuda.graph's default "global" capture mode, an event query from any other thread
    invalidates the capture, unless that thread is in thread-local capture mode, which the
    reporter's thread puts itself in (ligerd/_capture_mode.py). Here a report is built from
    another thread, with timed launches pending, in the middle of a capture."""
    import threading
    from ligerd import _capture_mode, _telemetry
    from ligerd.transformers import liger_rms_norm
    rep = _telemetry.Reporter(sample_every=1, send=lambda *args: None, start_thread=False)
    monkeypatch.setattr(_telemetry, "reporter", rep)
    ligerd.set_dispatch_mode("local")
    try:
        x, w = torch.randn(64, 256, device=DEV), torch.rand(256, device=DEV) + 0.5
        for _ in range(4):
            liger_rms_norm(x, w, 1e-6)  # each one timed: events pending until a report reads them
        assert rep._pending_events, "no timed launch is pending"
        built = []

        def reporter_thread():
            built.append(_capture_mode.use_thread_local_capture_mode())  # as Reporter._loop does
            rep.build_report()

        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):  # capture_error_mode="global"
            y = liger_rms_norm(x, w, 1e-6)
            t = threading.Thread(target=reporter_thread)
            t.start()
            t.join()
        assert built == [True] and not rep._pending_events
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(y, liger_rms_norm(x, w, 1e-6), rtol=0, atol=0)
    finally:
        ligerd.set_dispatch_mode(None)


def test_remote_capture_error_names_the_capture(daemon):
    """An op that fails inside a remote session's capture: the error says it was captured, why it
    ran in this process, and what the executor refused."""
    from ligerd.transformers import liger_rms_norm
    ligerd.set_dispatch_mode("remote")
    try:
        x = torch.randn(8, 64, device=DEV)
        before = local_launches()
        liger_rms_norm(x, torch.ones(64, device=DEV), 1e-6)  # opens the remote session
        assert_dispatch("remote", before, in_process=False)
        bad = torch.randn(8, 64, device=DEV).t()  # the executor wants a unit stride in the last dim
        graph = torch.cuda.CUDAGraph()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with expect_in_process_warning("remote"):
            with pytest.raises(ligerd.LigerdError) as ei:
                with torch.cuda.graph(graph, stream=s):
                    y = torch.empty(64, 8, device=DEV)
                    rstd = torch.empty(64, device=DEV)
                    _backend.call("rms_norm_fwd", X=bad, W=None, Y=y, RSTD=rstd, eps=1e-6, offset=0.0,
                                         casting_mode=0)
        msg = str(ei.value)
        assert "captured into a CUDA graph on cuda:" in msg and "ring records" in msg, msg
        assert "rms_norm_fwd" in msg, msg
        # the session is unharmed: the next op outside a capture runs in the daemon
        before = local_launches()
        liger_rms_norm(x, torch.ones(64, device=DEV), 1e-6)
        torch.cuda.synchronize()
        assert_dispatch("remote", before, in_process=False)
    finally:
        ligerd.set_dispatch_mode(None)
