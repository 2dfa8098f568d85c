"""ligerd under torch.compile on the CPU (kernels through the float64 reference executor):

- every ligerd op, the fused linear cross-entropy included, compiles with ``fullgraph=True``
  (a graph break is an error) and gives the eager results and gradients, with the AOTAutograd
  backend ``aot_eager`` and with Inductor;
- a tiny patched Llama's training step (ligerd's RMSNorm, RoPE, SwiGLU and fused linear
  cross-entropy) compiles whole, with and without gradient accumulation, and trains exactly as
  in eager mode;
- the compiled fused loss keeps its eager memory behaviour under Inductor (the gradients it
  computes in the forward become the parameters' .grad in place, no second copy);
- ``torch.library.opcheck`` passes for every registered ``ligerd::`` op (schema and mutation
  declarations, fake kernels against the real ones, autograd registration, AOT dispatch with
  dynamic shapes); a new op without a sample here fails the test that lists them.

CUDA graphs (reduce-overhead, torch.cuda.graph) need a GPU: tests/gpu/test_compile.py. What
remote dispatch does inside a capture is tested here against a fake extension (test_dispatch.py's).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

import ligerd  # noqa: E402
from ligerd import _backend, _dispatch  # noqa: E402
from ligerd.ops import cross_entropy as ce  # noqa: E402
from ligerd.ops import fused_add_rms_norm as farn  # noqa: E402
from ligerd.ops import fused_linear_cross_entropy as flce  # noqa: E402
from ligerd.ops import glu, layer_norm, rms_norm, rope, softmax  # noqa: E402
from ligerd.ops import jsd, kl_div, tvd  # noqa: E402
from ligerd.ops import relu_squared  # noqa: E402
from ligerd.ops import clamped_glu  # noqa: E402
from ligerd.testing import ref_executor  # noqa: E402

# aot_eager runs the same launches as eager (bitwise the same on the reference executor, up to
# torch ops AOTAutograd may decompose); Inductor also compiles the torch ops between ligerd's
# (casts, sums, the model's matmuls and attention), reassociating fp32 sums: a few ulps.
TOL = {"aot_eager": dict(rtol=1e-6, atol=1e-6), "inductor": dict(rtol=2e-5, atol=2e-5)}


@pytest.fixture
def launcher(monkeypatch):
    torch._dynamo.reset()
    yield ref_executor.install(monkeypatch)
    torch._dynamo.reset()


def _leaf(g, *shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype).requires_grad_()


# ---------------------------------------------------------------------------------------------
# Each case: make(g) -> (leaves, run); run(*leaves) -> tuple of tensors (some may be None). The
# step is sum(out * r) over the float outputs with fixed random r, so every upstream gradient is
# a random tensor (the fused loss's scalar gradient is not 1: its scaling is exercised).


def _rms(mode, offset, with_w, in_place):
    def make(g):
        leaves = [_leaf(g, 3, 5, 24)] + ([_leaf(g, 24)] if with_w else [])
        def run(x, w=None):
            return (rms_norm.rms_norm(x * 1.0, w, 1e-6, offset, mode, in_place),)
        return leaves, run
    return make


def _fused_add(g):
    def run(x, r, w):
        return farn.fused_add_rms_norm(x * 1.0, r * 1.0, w, 1e-6, 0.0, "llama", True)
    return [_leaf(g, 7, 24), _leaf(g, 7, 24), _leaf(g, 24)], run


def _ln(g):
    return [_leaf(g, 2, 5, 24), _leaf(g, 24), _leaf(g, 24)], lambda x, w, b: (layer_norm.layer_norm(x, w, b, 1e-5),)


def _glu(fn):
    def make(g):
        return [_leaf(g, 6, 40), _leaf(g, 6, 40)], lambda a, b: (fn(a * 1.0, b * 1.0),)
    return make


def _rope(g):
    def run(q, k, cos, sin):
        return rope.rotary_pos_emb(q * 1.0, k * 1.0, cos, sin)
    ang = torch.rand(2, 5, 8, generator=g, dtype=torch.float64) * 6
    cos, sin = torch.cat([ang.cos()] * 2, -1).float(), torch.cat([ang.sin()] * 2, -1).float()
    return [_leaf(g, 2, 4, 5, 16), _leaf(g, 2, 2, 5, 16), cos, sin], run


def _softmax(g):
    return [_leaf(g, 3, 4, 33)], lambda x: (softmax.softmax(x * 1.0),)


def _relu_squared(g):
    return [_leaf(g, 3, 4, 33)], lambda x: (relu_squared.relu_squared(x * 1.0),)


def _clamped_glu(pairs):
    def make(g):  # spread past the limit: clamped positions in both directions
        return [_leaf(g, 3, 4, 34, scale=4.0)], \
            lambda x: (clamped_glu.clamped_glu(x * 1.0, 1.702, 3.0, 1.0 if pairs else 0.0, pairs),)
    return make


def _kl(reduction, log_target=False):
    def make(g):
        t = torch.randn(2, 3, 24, generator=g, dtype=torch.float64).log_softmax(-1).float()
        return [_leaf(g, 2, 3, 24)], lambda x: (kl_div.kl_div(x * 1.0, t if log_target else t.exp(), reduction,
                                                               log_target),)
    return make


def _labels(g, rows):
    lab = torch.randint(0, 20, (rows,), generator=g)
    lab[[1, 4]] = -100
    return lab


def _jsd(beta, labelled=True):
    def make(g):
        y = torch.randn(9, 20, generator=g, dtype=torch.float64).log_softmax(-1).float()
        lab = _labels(g, 9) if labelled else None
        return [_leaf(g, 9, 20)], lambda x: (jsd.jsd(x.log_softmax(-1), y, lab, beta),)
    return make


def _tvd(reduction):
    def make(g):
        q = torch.rand(9, 20, generator=g)
        lab = _labels(g, 9)
        return [_leaf(g, 9, 20)], lambda p: (tvd.tvd(p * 1.0, q, lab, reduction),)
    return make


def _ce(reduction, **kw):
    def make(g):
        t = torch.randint(0, 29, (11,), generator=g)
        t[4] = -100
        w = torch.rand(29, generator=g) + 0.5 if kw.pop("weighted", False) else None
        def run(x):
            loss, z, acc, _ = ce.cross_entropy(x * 1.0, t, w, -100, reduction=reduction, **kw)
            return loss, z, acc
        return [_leaf(g, 11, 29, scale=2.0)], run
    return make


def _flce(reduction="mean", bias=True, dtype=torch.float32, divisor=False, **kw):
    def make(g):
        bt, H, V = 37, 16, 45
        t = torch.randint(0, V, (bt,), generator=g)
        t[[3, 20]] = -100
        leaves = [_leaf(g, bt, H, dtype=dtype), _leaf(g, V, H, dtype=dtype, scale=0.3)]
        if bias:
            leaves.append(_leaf(g, V, dtype=dtype))
        ce_w = torch.rand(V, generator=g) + 0.5 if kw.pop("weighted", False) else None
        n = torch.tensor(50.0) if divisor else None  # num_items_in_batch of a larger batch
        def run(x, W, b=None):
            loss, z, acc, pred = flce.fused_linear_cross_entropy(
                x * 1.0, W, t, b, ce_w, reduction=reduction, mean_divisor=n, **kw)
            return loss, z, acc, (None if pred is None else pred.float())
        return leaves, run
    return make


CASES = {
    "rms_norm_llama": _rms("llama", 0.0, True, True),
    "rms_norm_gemma_offset": _rms("gemma", 1.0, True, False),
    "rms_norm_no_weight": _rms("none", 0.0, False, True),
    "fused_add_rms_norm": _fused_add,
    "layer_norm": _ln,
    "swiglu": _glu(glu.swiglu),
    "geglu": _glu(glu.geglu),
    "rope": _rope,
    "softmax": _softmax,
    "relu_squared": _relu_squared,
    "clamped_glu_pairs": _clamped_glu(True),
    "clamped_glu_halves": _clamped_glu(False),
    "kl_div_batchmean": _kl("batchmean"),
    "kl_div_none_log_target": _kl("none", log_target=True),
    "jsd_labels": _jsd(0.3),
    "jsd_forward_kl": _jsd(0.0, labelled=False),
    "jsd_reverse_kl": _jsd(1.0),
    "tvd_none": _tvd("none"),
    "tvd_mean": _tvd("mean"),
    "cross_entropy_mean": _ce("mean", label_smoothing=0.1, lse_square_scale=1e-3, return_z_loss=True),
    "cross_entropy_sum_weighted": _ce("sum", weighted=True, return_token_accuracy=True),
    "cross_entropy_none_softcap": _ce("none", softcap=3.0),
    "flce_mean": _flce("mean"),
    "flce_sum_no_bias": _flce("sum", bias=False),
    "flce_none": _flce("none", label_smoothing=0.1),
    "flce_mean_divisor": _flce("mean", divisor=True, softcap=4.0),
    "flce_weighted_extras": _flce("mean", weighted=True, lse_square_scale=1e-3, return_z_loss=True,
                                  return_token_accuracy=True, return_predicted_tokens=True),
    "flce_bf16_fp32_accum": _flce("mean", dtype=torch.bfloat16, accum_dtype=torch.float32),
    "flce_fp16_mean": _flce("mean", dtype=torch.float16),
    "flce_none_token_scaling": _flce("none", bias=False, use_token_scaling=True),
}


def _step(run, leaves, weights=None):
    """Outputs and the gradients of sum(out * r) with respect to every leaf that requires grad."""
    outs = run(*leaves)
    floats = [o for o in outs if o is not None and o.is_floating_point()]
    if weights is None:
        g = torch.Generator().manual_seed(99)
        weights = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(torch.float32) for o in floats]
    total = sum((o.float() * r).sum() for o, r in zip(floats, weights) if o.requires_grad)
    total.backward()
    grads = [p.grad for p in leaves if p.requires_grad]
    return [o.detach() if o is not None else None for o in outs], grads, weights


def _compare(case, backend):
    g = torch.Generator().manual_seed(sum(map(ord, case)))
    leaves, run = CASES[case](g)
    twins = [p.detach().clone().requires_grad_(p.requires_grad) for p in leaves]
    eager_out, eager_grads, weights = _step(run, leaves)
    compiled = torch.compile(run, fullgraph=True, backend=backend)
    out, grads, _ = _step(compiled, twins, weights)
    tol = TOL[backend] if leaves[0].dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    assert len(out) == len(eager_out)
    for a, e in zip(out, eager_out):
        assert (a is None) == (e is None)
        if a is not None:
            torch.testing.assert_close(a, e, **tol)
    assert len(grads) == len(eager_grads) and all(x is not None for x in grads)
    for a, e in zip(grads, eager_grads):
        torch.testing.assert_close(a, e, **tol)


@pytest.mark.parametrize("case", list(CASES))
def test_each_op_compiles_fullgraph_aot_eager(launcher, case):
    _compare(case, "aot_eager")


# Inductor compiles a C++ kernel for every graph (seconds each on a small CPU): a representative
# subset, one per family (the fused loss in three forms).
@pytest.mark.parametrize("case", ["rms_norm_llama", "fused_add_rms_norm", "layer_norm", "swiglu", "rope",
                                  "softmax", "jsd_labels", "cross_entropy_mean", "flce_mean", "flce_none",
                                  "flce_bf16_fp32_accum"])
def test_each_op_compiles_fullgraph_inductor(launcher, case):
    _compare(case, "inductor")


@pytest.mark.parametrize("case", ["flce_mean", "flce_none", "flce_bf16_fp32_accum"])
def test_sliced_flce_compiles_fullgraph_aot_eager(launcher, monkeypatch, case):
    """The sliced sweep (LIGERD_FLCE_MODE=sliced) inside the traced custom op: the same losses and
    gradients as eager, with blocks and slices small enough that every loop runs several times."""
    monkeypatch.setenv("LIGERD_FLCE_MODE", "sliced")
    monkeypatch.setenv("LIGERD_FLCE_SLICE", "16,16")
    _compare(case, "aot_eager")
    ops = {c[0] for c in launcher.calls}
    assert "ce_slice_stats" in ops and "ce_slice_grad" in ops and "cross_entropy_fwd" not in ops, ops


def test_compiled_flce_is_one_custom_op_call(launcher):
    """The tracer sees the chunk loop as one node: the forward graph calls
    ligerd::fused_linear_cross_entropy_fwd, never the chunk ops; no graph break."""
    from torch._dynamo.testing import AotEagerAndRecordGraphs
    g = torch.Generator().manual_seed(3)
    leaves, run = _flce("mean")(g)
    rec = AotEagerAndRecordGraphs()
    _step(torch.compile(run, fullgraph=True, backend=rec), leaves)
    targets = [str(n.target) for gm in rec.fw_graphs for n in gm.graph.nodes if n.op == "call_function"]
    assert "ligerd.fused_linear_cross_entropy_fwd.default" in targets, targets
    assert not any("gemm" in t or "cross_entropy_fwd_inplace" in t for t in targets), targets
    assert len(rec.graphs) == 1


def test_compiled_flce_dynamic_shapes(launcher):
    """Token counts that change between calls (packed or variable-length batches): one graph with
    a symbolic token count (the fake kernels take SymInts), results equal to eager each time."""
    from torch._dynamo.testing import CompileCounterWithBackend
    counter = CompileCounterWithBackend("aot_eager")
    g = torch.Generator().manual_seed(8)
    W0 = torch.randn(45, 16, generator=g) * 0.3

    def f(x, W, t, n):
        loss, _, acc, _ = flce.fused_linear_cross_entropy(x * 1.0, W, t, mean_divisor=n,
                                                          return_token_accuracy=True)
        return loss * 1.5, acc

    compiled = torch.compile(f, fullgraph=True, backend=counter, dynamic=True)
    frames = []
    for bt in (37, 50, 129):
        x0 = torch.randn(bt, 16, generator=g)
        t = torch.randint(0, 45, (bt,), generator=g)
        t[::5] = -100
        n = torch.tensor(float(bt))
        outs = []
        for fn in (f, compiled):
            x, W = x0.clone().requires_grad_(), W0.clone().requires_grad_()
            loss, acc = fn(x, W, t, n)
            loss.backward()
            outs.append((loss.detach(), acc, x.grad, W.grad))
        for a, e in zip(*outs):
            torch.testing.assert_close(a, e, **TOL["aot_eager"])
        frames.append(counter.frame_count)
    assert frames[0] == frames[-1], f"recompiled for a new token count: {frames}"


def test_compiled_flce_gradients_reuse_the_forward_buffers(launcher):
    """Inductor writes the backward's grad_output scaling into the gradients the forward computed
    (AOTAutograd donates the saved tensors): W.grad and x.grad are those very buffers, as in eager
    mode, so the compiled fused loss holds no second copy of dW (V x H) during the backward."""
    g = torch.Generator().manual_seed(5)
    x, W, b = _leaf(g, 40, 16), _leaf(g, 50, 16, scale=0.3), _leaf(g, 50)
    t = torch.randint(0, 50, (40,), generator=g)

    def f(x, W, b):
        return flce.fused_linear_cross_entropy(x, W, t, b)[0] * 0.75

    torch.compile(f, fullgraph=True, backend="inductor")(x, W, b).backward()
    launcher_gemm_out = {c[1][3][1] for c in launcher.calls if c[0] == "gemm"}
    assert W.grad.data_ptr() in launcher_gemm_out
    assert x.grad.data_ptr() in launcher_gemm_out


# ---------------------------------------------------------------------------------------------
# A tiny patched Llama, trained a few AdamW steps eager and compiled whole.

transformers = pytest.importorskip("transformers", reason="transformers is not installed")

from ligerd.testing import convergence as cv  # noqa: E402
import ligerd.transformers as lt  # noqa: E402

SIZES = dict(hidden=64, layers=2, vocab=256, heads=4, kv_heads=2, intermediate=96)


@pytest.fixture
def patched_llama(launcher):
    """(model, init state): a tiny Llama patched by apply_liger_kernel_to_llama (every default op)."""
    lt.revert_liger_kernel_patches()
    lt.apply_liger_kernel_to_llama()
    cfg = cv.mini_config("llama", **SIZES)
    model = cv.build(cfg, torch.float32, "cpu")
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    yield model, init
    lt.revert_liger_kernel_patches()


def _train(model, init, steps, *, compile_backend=None, micro_batches=1):
    """Per-step losses and the final parameters; the model's forward + backward compiled
    (fullgraph) when ``compile_backend`` is set, AdamW in eager mode."""
    model.load_state_dict(init)
    model.train()
    fwd = model if compile_backend is None else torch.compile(model, fullgraph=True, backend=compile_backend)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    data, _ = cv.make_data(SIZES["vocab"], steps, 4, 12, subset=64)
    losses = []
    for x, labels in data:
        n_items = torch.tensor(float((labels[:, 1:] != -100).sum())) if micro_batches > 1 else None
        total = 0.0
        for xs, ls in zip(x.chunk(micro_batches), labels.chunk(micro_batches)):
            kw = {} if n_items is None else {"num_items_in_batch": n_items}
            out = fwd(input_ids=xs, labels=ls, **kw)
            out.loss.backward()
            total += float(out.loss.detach())
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total)
    return losses, {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("micro_batches", [1, 2])
def test_patched_llama_training_step_compiles_fullgraph(patched_llama, backend, micro_batches):
    model, init = patched_llama
    launcher = _backend._test_launcher
    eager_losses, eager_params = _train(model, init, 3, micro_batches=micro_batches)
    launched = {c[0] for c in launcher.calls}
    # the patched ops ran (the fused loss is its GEMMs + cross-entropy)
    assert {"rms_norm_fwd", "rope_fwd", "swiglu_fwd", "gemm", "cross_entropy_fwd"} <= launched, launched
    launcher.calls.clear()
    losses, params = _train(model, init, 3, compile_backend=backend, micro_batches=micro_batches)
    assert {"rms_norm_fwd", "rms_norm_bwd", "rope_fwd", "rope_bwd", "swiglu_fwd", "swiglu_bwd", "gemm",
            "cross_entropy_fwd"} <= {c[0] for c in launcher.calls}
    tol = TOL[backend]
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(eager_losses), **tol)
    assert eager_losses[-1] < eager_losses[0]  # it trains
    for name, p in eager_params.items():
        # AdamW divides by sqrt(v): parameter updates amplify gradient ulps a little.
        torch.testing.assert_close(params[name], p, rtol=1e-4, atol=1e-5, msg=name)


def test_patched_llama_tied_embeddings_compiles(launcher):
    """Tied input and output embeddings (Llama-3.2-1B's layout): the fused loss's dW and the
    embedding's gradient meet in one parameter, inside the compiled backward."""
    lt.revert_liger_kernel_patches()
    lt.apply_liger_kernel_to_llama()
    try:
        cfg = cv.mini_config("llama", **SIZES)
        cfg.tie_word_embeddings = True
        model = cv.build(cfg, torch.float32, "cpu")
        assert model.lm_head.weight is model.model.embed_tokens.weight
        init = {k: v.detach().clone() for k, v in model.state_dict().items()}
        eager_losses, eager_params = _train(model, init, 3)
        losses, params = _train(model, init, 3, compile_backend="aot_eager")
    finally:
        lt.revert_liger_kernel_patches()
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(eager_losses), **TOL["aot_eager"])
    for name, p in eager_params.items():
        torch.testing.assert_close(params[name], p, rtol=1e-4, atol=1e-5, msg=name)


def test_patched_llama_compiles_once(patched_llama):
    """Later steps reuse the compiled graphs (no recompilation per step or per micro-batch)."""
    from torch._dynamo.testing import CompileCounterWithBackend
    model, init = patched_llama
    counter = CompileCounterWithBackend("aot_eager")
    model.load_state_dict(init)
    cm = torch.compile(model, fullgraph=True, backend=counter)
    data, _ = cv.make_data(SIZES["vocab"], 3, 2, 12, subset=64)
    for x, labels in data:
        cm(input_ids=x, labels=labels).loss.backward()
    assert counter.frame_count == 1, counter.frame_count


# ---------------------------------------------------------------------------------------------
# opcheck: every registered ligerd:: op.


def _all_ligerd_ops():
    import torch._library.custom_ops as custom_ops
    import ligerd.ops  # noqa: F401  (registers them)
    import ligerd.transformers  # noqa: F401
    return sorted(k.split("::", 1)[1] for k in custom_ops.OPDEFS if k.startswith("ligerd::"))


def _opcheck_samples():
    """op name -> list of argument tuples (fresh tensors each call). Inputs of differentiable ops
    require grad (opcheck then checks the autograd registration and traces the backward)."""
    g = torch.Generator().manual_seed(11)

    def r(*shape, grad=False, dtype=torch.float32, scale=1.0):
        t = (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)
        return t.requires_grad_(grad)

    rows, n = 6, 20
    x, w = r(rows, n), r(n) + 2
    _, rstd = rms_norm.rms_norm_fwd.impl(x, w, 1e-6, 0.0, 0, False)
    _, s_s, s_rstd = farn.fused_add_rms_norm_fwd.impl(x, r(rows, n), w, 1e-6, 0.0, 0, False)
    _, ln_mean, ln_rstd = layer_norm.layer_norm_fwd.impl(x, w, r(n), 1e-5)
    sm_y = softmax.softmax_fwd.impl(x)
    V = 17
    t = torch.randint(0, V, (9,), generator=g)
    t[2] = -100
    cw = torch.rand(V, generator=g) + 0.5
    denom = ce.cross_entropy_count.impl(t, None, V, -100)
    wdenom = ce.cross_entropy_count.impl(t, cw, V, -100)
    ang = torch.rand(1, 5, 4, generator=g, dtype=torch.float64)
    cos, sin = torch.cat([ang.cos()] * 2, -1).float(), torch.cat([ang.sin()] * 2, -1).float()
    H = 8

    def flce_fwd_args(red, grad, bias=True, **o):
        o = dict(dict(ii=-100, lss=0.0, ls=0.0, cap=0.0, ts=False, z=False, p=False, acc=False), **o)
        return (r(9, H, grad=grad), r(V, H, grad=grad, scale=0.3), t, r(V, grad=grad) if bias else None, None,
                denom, o["ii"], o["lss"], o["ls"], red, o["cap"], o["ts"], o["z"], o["p"], grad, grad,
                grad and bias, o["acc"])

    lab = torch.randint(0, n, (rows,), generator=g)
    lab[1] = -100
    n_valid = (lab != -100).sum().reshape(1)
    probs = torch.softmax(r(rows, n), -1)

    return {
        "kl_div_fwd": [(r(rows, n, grad=True), probs, False, 3, 1e-10, rows),
                       (r(rows, n, grad=True), r(rows, n), True, 0, 1e-10, rows),
                       (r(rows, n, grad=True), probs, False, 2, 1e-10, rows)],
        "kl_div_bwd": [(probs, torch.tensor([0.5]), False, 1.0 / rows), (r(rows, n), r(rows, n), True, 1.0)],
        "jsd_fwd": [(r(rows, n, grad=True), r(rows, n), None, None, 0.5, -100, True),
                    (r(rows, n, grad=True), r(rows, n), lab, n_valid, 0.0, -100, True),
                    (r(rows, n, grad=True), r(rows, n), lab, n_valid, 1.0, -100, False)],
        "tvd_fwd": [(r(rows, n, grad=True), r(rows, n), None, None, 3, -100, True),
                    (r(rows, n, grad=True), r(rows, n), lab, n_valid, 0, -100, True),
                    (r(rows, n), r(rows, n), lab, n_valid, 2, -100, False)],
        "cross_entropy_count": [(t, None, V, -100), (t, cw, V, -100)],
        "cross_entropy_fwd": [(r(9, V, grad=True), t, None, denom, -100, 1e-3, 0.1, 1, 0.0, False, True, True, True),
                              (r(9, V), t, cw, wdenom, -100, 0.0, 0.0, 0, 5.0, False, False, False, False)],
        "cross_entropy_fwd_inplace": [(r(9, V), t, None, denom, r(9).abs(), -100, 0.0, 0.0, 2, 0.0, True, True, True)],
        "cross_entropy_scale_": [(r(9, V), torch.tensor([0.5])), (r(9, V), r(9))],
        "rms_norm_fwd": [(r(rows, n, grad=True), r(n, grad=True), 1e-6, 0.0, 0, False),
                         (r(rows, n, grad=True), None, 1e-6, 1.0, 1, True)],
        "rms_norm_bwd": [(r(rows, n), x, w, rstd, 0.0, 0, True), (r(rows, n), x, None, rstd, 0.0, 2, False)],
        "rms_norm_bwd_inplace": [(r(rows, n), x, w, rstd, 0.0, 0, True)],
        "fused_add_rms_norm_fwd": [(r(rows, n, grad=True), r(rows, n, grad=True), r(n, grad=True), 1e-6, 0.0, 0,
                                    False)],
        "fused_add_rms_norm_bwd": [(r(rows, n), r(rows, n), s_s, w, s_rstd, 0.0, 0, True),
                                   (r(rows, n), None, s_s, w, s_rstd, 0.0, 1, False)],
        "fused_add_rms_norm_bwd_inplace": [(r(rows, n), r(rows, n), s_s, w, s_rstd, 0.0, 0, True)],
        "layer_norm_fwd": [(r(rows, n, grad=True), r(n, grad=True), r(n, grad=True), 1e-5),
                           (r(rows, n, grad=True), None, None, 1e-5)],
        "layer_norm_bwd": [(r(rows, n), x, w, r(n), ln_mean, ln_rstd, True, True),
                           (r(rows, n), x, None, None, ln_mean, ln_rstd, False, False)],
        "glu_fwd": [(r(rows, n, grad=True), r(rows, n, grad=True), glu.SILU, False),
                    (r(rows, n, grad=True), r(rows, n, grad=True), glu.GELU_TANH, False)],
        "glu_bwd": [(r(rows, n), r(rows, n), r(rows, n), glu.SILU),
                    (r(rows, n), r(rows, n), r(rows, n), glu.GELU_TANH)],
        "glu_bwd_inplace": [(r(rows, n), r(rows, n), r(rows, n), glu.SILU)],
        "rope": [(r(1, 3, 5, 8, grad=True), r(1, 2, 5, 8, grad=True), cos, sin, False),
                 (r(1, 3, 5, 8), r(1, 2, 5, 8), cos, sin, True)],
        "rope_inplace": [(r(1, 3, 5, 8), r(1, 2, 5, 8), cos, sin, False)],
        "softmax_fwd": [(r(rows, n, grad=True),)],
        "softmax_bwd": [(r(rows, n), sm_y)],
        "relu_squared_fwd": [(r(rows, n, grad=True),)],
        "relu_squared_bwd": [(r(rows, n), r(rows, n))],
        "clamped_glu_fwd": [(r(rows, n, grad=True, scale=4.0), 1.702, 3.0, 1.0, True),
                            (r(rows, n, grad=True, scale=4.0), 1.0, 3.0, 0.0, False)],
        "clamped_glu_bwd": [(r(rows, n // 2), r(rows, n, scale=4.0), 1.702, 3.0, 1.0, True),
                            (r(rows, n // 2), r(rows, n, scale=4.0), 1.0, 3.0, 0.0, False)],
        "fused_linear_cross_entropy_fwd": [
            flce_fwd_args(1, True, lss=1e-3, ls=0.1, z=True, p=True),
            flce_fwd_args(2, True, bias=False, cap=5.0),
            flce_fwd_args(0, True, ts=True),
            flce_fwd_args(1, False)],
        "fused_linear_cross_entropy_bwd": [
            (r(9), r(9, H), r(V, H, scale=0.3), t, r(V), None, denom, -100, 0.0, 0.1, 0, 0.0, False, True, True,
             True, False),
            (r(9), r(9, H), r(V, H, scale=0.3), t, None, cw, wdenom, -100, 1e-3, 0.0, 0, 0.0, True, True, False,
             False, False)],
    }


def test_every_ligerd_op_has_an_opcheck_sample(launcher):
    missing = sorted(set(_all_ligerd_ops()) - set(_opcheck_samples()))
    assert not missing, (f"ligerd ops without an opcheck sample in tests/python/test_compile.py "
                         f"(_opcheck_samples): {missing}")


@pytest.mark.parametrize("op", _all_ligerd_ops())
def test_opcheck(launcher, op):
    samples = _opcheck_samples().get(op)
    if samples is None:
        pytest.fail(f"no opcheck sample for ligerd::{op} (see test_every_ligerd_op_has_an_opcheck_sample)")
    overload = getattr(torch.ops.ligerd, op).default
    for args in samples:
        result = torch.library.opcheck(overload, args)
        assert all(v == "SUCCESS" for v in result.values()), (op, result)


# ---------------------------------------------------------------------------------------------
# Remote dispatch inside a CUDA graph capture (fake extension and daemon, as test_dispatch.py).


class _FakeTensor:
    is_cuda = True

    def __init__(self, index=0):
        import types
        self.device = types.SimpleNamespace(index=index)


class _FakeHandle:
    def __init__(self, device):
        self.device, self.mode, self.reason, self.session_id = device, "remote", "MPS active", 1
        self.closed = False


class _FakeExt:
    def __init__(self, local_error=None, init_error=None):
        self.local, self.remote, self.local_error, self.opened = [], [], local_error, 0
        self.init_error, self.inits = init_error, []

    def init_device(self, device):
        self.inits.append((device, self.opened))
        if self.init_error is not None:
            raise self.init_error

    def open_session(self, socket_path, device, requested_mode, client_name):
        self.opened += 1
        return _FakeHandle(device)

    def close_session(self, h):
        h.closed = True

    def session_check(self, h):
        pass

    def remote_launch(self, h, op, tensors, scalars):
        self.remote.append(op)

    def launch(self, op, tensors, scalars):
        if self.local_error is not None:
            raise self.local_error
        self.local.append(op)


@pytest.fixture
def fake_remote(monkeypatch):
    from ligerd import _daemon, _extension

    def make(capturing, **kw):
        ext = _FakeExt(**kw)
        monkeypatch.setattr(_backend, "_C", ext)
        monkeypatch.setattr(_extension, "_ext", ext)
        monkeypatch.setattr(_dispatch, "_cuda_device_count", lambda: 1)
        monkeypatch.setattr(_daemon, "connect_or_start", lambda env=None: _daemon.DaemonHandle("/fake.sock"))
        monkeypatch.setattr(_backend, "capturing", lambda device: capturing[0])
        ligerd.set_dispatch_mode("remote")
        return ext
    return make


def test_remote_ops_captured_into_a_cuda_graph_run_in_process(fake_remote):
    state = [False]
    ext = fake_remote(state)
    _backend.launch("rms_norm_fwd", [_FakeTensor()], [1.0, 0.0, 0])
    state[0] = True  # a capture begins
    with pytest.warns(ligerd.LigerdWarning, match="cannot be captured.*run in this process") as w:
        _backend.launch("rms_norm_fwd", [_FakeTensor()], [1.0, 0.0, 0])
        _backend.launch("rms_norm_bwd", [_FakeTensor()], [0.0, 0])
    assert len(w) == 1  # said once per device
    state[0] = False  # capture over: back to the daemon
    _backend.launch("rms_norm_fwd", [_FakeTensor()], [1.0, 0.0, 0])
    assert ext.remote == ["rms_norm_fwd", "rms_norm_fwd"]
    assert ext.local == ["rms_norm_fwd", "rms_norm_bwd"]
    assert ligerd.dispatch_info()["devices"][0]["mode"] == "remote"


def test_no_session_is_opened_inside_a_capture(fake_remote):
    """The first op on a device, inside a capture: opening a session (RPCs, the flag page) is no
    graph work, so the op runs in process and the session opens at the first op after it."""
    state = [True]
    ext = fake_remote(state)
    with pytest.warns(ligerd.LigerdWarning, match="cannot be captured"):
        _backend.launch("softmax_fwd", [_FakeTensor()], [])
    assert ext.opened == 0 and ext.local == ["softmax_fwd"]
    state[0] = False
    _backend.launch("softmax_fwd", [_FakeTensor()], [])
    assert ext.opened == 1 and ext.remote == ["softmax_fwd"]


def test_remote_session_creates_the_in_process_executor_before_any_capture(fake_remote):
    """The executor that captured ops use is created when the device's remote session opens (not
    by the first captured op, inside the capture); no session inside a capture, no executor there."""
    state = [False]
    ext = fake_remote(state)
    _backend.launch("rms_norm_fwd", [_FakeTensor()], [1.0, 0.0, 0])
    assert ext.inits == [(0, 1)] and ext.remote == ["rms_norm_fwd"]  # right after OpenSession
    state[0] = True
    with pytest.warns(ligerd.LigerdWarning, match="cannot be captured"):
        _backend.launch("rms_norm_fwd", [_FakeTensor()], [1.0, 0.0, 0])
    assert ext.inits == [(0, 1)] and ext.local == ["rms_norm_fwd"]


def test_executor_that_cannot_be_created_yet_leaves_the_remote_session_alone(fake_remote, caplog):
    import logging
    from ligerd._errors import KernelError
    ext = fake_remote([False], init_error=KernelError("no JIT cache at /nowhere", code=9, op="init"))
    with caplog.at_level(logging.INFO, logger="ligerd"):
        _backend.launch("rms_norm_fwd", [_FakeTensor()], [1.0, 0.0, 0])
    assert ext.remote == ["rms_norm_fwd"] and ligerd.dispatch_info()["devices"][0]["mode"] == "remote"
    assert any("could not be created yet: no JIT cache at /nowhere" in r.getMessage() for r in caplog.records)


def test_captured_remote_op_that_cannot_run_in_process_says_why(fake_remote):
    from ligerd._errors import KernelError
    ext = fake_remote([True], local_error=KernelError("ligerd op gemm: no kernel image for sm_90", code=13, op="gemm"))
    with pytest.warns(ligerd.LigerdWarning):
        with pytest.raises(KernelError) as ei:
            _backend.launch("gemm", [_FakeTensor()], [1.0, 0.0])
    msg = str(ei.value)
    assert "captured into a CUDA graph on cuda:0" in msg and "ring records" in msg
    assert "no kernel image for sm_90" in msg and ei.value.op == "gemm"
    assert ext.remote == []


def test_telemetry_thread_leaves_captures_alone(monkeypatch):
    """The telemetry reporter's thread reads CUDA events; it puts itself in thread-local capture
    mode first (asking again until CUDA is up), so that it cannot invalidate a CUDA graph another
    thread captures in global mode (tests/gpu/test_compile.py checks it in a real capture)."""
    import threading
    from ligerd import _capture_mode, _telemetry
    calls = []
    ready = threading.Event()

    def record():
        calls.append(threading.current_thread().name)
        if len(calls) >= 2:
            ready.set()
            return True
        return False  # "CUDA not initialised yet": the thread must ask again

    monkeypatch.setattr(_capture_mode, "use_thread_local_capture_mode", record)
    rep = _telemetry.Reporter(interval_s=0.1, send=lambda *args: None)
    try:
        assert ready.wait(10), calls
    finally:
        rep._stop.set()
    time_to_settle = threading.Event()
    time_to_settle.wait(0.3)
    assert len(calls) == 2 and set(calls) == {"ligerd-telemetry"}, calls


def test_local_dispatch_never_asks_about_capture(monkeypatch):
    """Local dispatch captures like any kernel launch: no per-op capture query on its fast path."""
    ext = _FakeExt()
    monkeypatch.setattr(_backend, "_C", ext)
    monkeypatch.setattr(_backend, "capturing", lambda device: pytest.fail("asked"))
    monkeypatch.setenv("LIGERD_NO_DAEMON", "1")
    ligerd.set_dispatch_mode("local")
    for _ in range(3):
        _backend.launch("rms_norm_fwd", [_FakeTensor()], [1.0, 0.0, 0])
    assert ext.local == ["rms_norm_fwd"] * 3
