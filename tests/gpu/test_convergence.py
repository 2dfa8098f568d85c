"""Convergence on the GPU: mini models (hidden 1024, 4 layers, vocab 32000) of llama, mistral,
qwen2, gemma2 (final-logit soft-capping 30), phi3 (fused gate_up) and mixtral (4 experts, top-2,
router aux loss) trained for 32 AdamW steps from the same initial weights on the same batches,
with transformers' own modules and with ``apply_liger_kernel_to_<family>()`` (every default patch:
rope, RMSNorm, SwiGLU/GeGLU, fused linear cross-entropy), in fp32 and bf16, with ligerd's ops
dispatched locally and remotely (the daemon, under MPS in tests/gpu/run.sh). Plus gradient
accumulation (2 micro-batches, transformers' ``num_items_in_batch``) against both transformers'
accumulated run and its full-batch run.

Compared (see tests/gpu/convergence.py for the harness):
- the per-step training losses,
- the final parameters, as the mismatch of the training update per parameter tensor:
  ||p_ligerd - p_hf|| / ||p_hf - p_init|| (elementwise comparisons of final weights are either
  vacuous, since Adam moves each element by at most ~lr per step, or flaky, since Adam's
  normalised update flips for elements whose gradient is at rounding level),
- the eval logits of the trained models on a held-out batch (relative Frobenius error).

Tolerances (the only differences are the replaced ops' rounding: ligerd's kernels accumulate in
fp32 in a different order than PyTorch, the fused linear cross-entropy never rounds the logits to
the model dtype, and its weight gradient is summed over token chunks):
- fp32: one op differs from PyTorch's by a few fp32 ulps (~1e-7 relative); over 32 steps Adam
  amplifies that only where gradients are at rounding level. Losses within 2e-4 absolute +
  1e-4 relative, updates within 2% (in norm), eval logits within 1e-3 relative.
- bf16: every activation is rounded to 8 bits (2^-8 = 4e-3 relative) and the weights are bf16
  (an Adam update of ~lr=1e-3 on a weight of ~0.02 is ~8 bf16 ulps of 1.2e-4, so each update is
  itself rounded by up to ~6%), so both runs are noisy at the percent level and the difference is
  that noise: losses within 5e-2 absolute + 1e-2 relative, updates within 25% in norm, eval
  logits within 3e-2 relative.
Both runs must also actually learn (the loss falls by more than 1.0 in 32 steps), so a comparison
of two runs that did nothing cannot pass.

Runtime on an H100: 12 reference runs + 24 patched runs + accumulation runs of 32 steps of a
~100M-parameter model on 4x128 tokens: about 1-2 minutes.
"""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)
pytest.importorskip("transformers", reason="transformers is not installed")

import ligerd  # noqa: E402

import convergence as cv  # noqa: E402  (tests/gpu/convergence.py)

DEV = "cuda"
STEPS, BATCH, SEQ = 32, 4, 128
LR = 1e-3  # large enough that the mini models learn visibly in 32 steps (MIN_LEARNING)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# (loss atol, loss rtol, update mismatch, eval-logit relative error); reasoning in the docstring.
TOL = {"fp32": (2e-4, 1e-4, 0.02, 1e-3), "bf16": (5e-2, 1e-2, 0.25, 3e-2)}
MIN_LEARNING = 1.0  # nats the loss must fall over the 32 steps


@pytest.fixture(scope="module")
def data():
    return cv.make_data(32000, STEPS, BATCH, SEQ)


_REFS: dict = {}


def reference(family, dtype_name, data, micro_batches=1):
    """transformers' run (cached: the same for both dispatch modes) and the initial weights."""
    key = (family, dtype_name, micro_batches)
    if key not in _REFS:
        cfg = cv.mini_config(family)
        init = _REFS.get(("init", family, dtype_name))
        if init is None:
            init = cv.initial_state(cfg, DTYPES[dtype_name], DEV)
            _REFS[("init", family, dtype_name)] = init
        run = cv.train(family, cfg, DTYPES[dtype_name], DEV, data[0], data[1], init,
                       use_ligerd=False, micro_batches=micro_batches, lr=LR)
        _REFS[key] = run
    return _REFS[("init", family, dtype_name)], _REFS[key]


@pytest.fixture(params=["local", "remote"])
def dispatch(request):
    mode = request.param
    if mode == "remote":
        binary = os.environ.get("LIGERD_BIN", "").strip()
        if not binary or not os.access(binary, os.X_OK):
            pytest.skip("remote dispatch needs a daemon: LIGERD_BIN must name a built ligerd "
                        "(tests/gpu/run.sh sets it)")
    ligerd.set_dispatch_mode(mode)
    yield mode
    ligerd.set_dispatch_mode(None)


def assert_dispatched(mode):
    info = ligerd.dispatch_info()
    if mode == "local":  # local sessions open no per-device entry
        assert info["mode"] == "local", f"ligerd ops did not run locally: {info}"
        return
    dev = info["devices"].get(torch.cuda.current_device())
    assert dev is not None and dev["mode"] == mode, f"ligerd ops did not run {mode}: {info}"


def compare(run, ref, init, dtype_name, what):
    atol, rtol, upd_tol, logit_tol = TOL[dtype_name]
    for step, (a, b) in enumerate(zip(run.losses, ref.losses)):
        assert abs(a - b) <= atol + rtol * abs(b), (
            f"{what}: step {step} loss {a:.6f} vs transformers {b:.6f}; all steps:\n"
            f"ligerd {[round(v, 5) for v in run.losses]}\nhf     {[round(v, 5) for v in ref.losses]}")
    for a, b in zip(run.aux_losses, ref.aux_losses):
        assert abs(a - b) <= atol + rtol * abs(b), f"{what}: router aux loss {a} vs {b}"
    mismatch = cv.update_mismatch(run, ref, init)
    worst = sorted(mismatch.items(), key=lambda kv: -kv[1])[:5]
    err = cv.rel_err(run.eval_logits, ref.eval_logits)
    dl = max(abs(a - b) for a, b in zip(run.losses, ref.losses))
    print(f"{what}: loss {ref.losses[0]:.4f} -> {ref.losses[-1]:.4f}, max |dloss| {dl:.3e}, "
          f"update mismatch {worst[0][1]:.3e} ({worst[0][0]}), eval logits rel err {err:.3e}")
    assert worst[0][1] <= upd_tol, f"{what}: training updates differ from transformers': {worst}"
    assert err <= logit_tol, f"{what}: eval logits relative error {err:.3e} > {logit_tol}"


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("family", cv.FAMILIES)
def test_convergence(family, dtype_name, dispatch, data):
    init, ref = reference(family, dtype_name, data)
    assert ref.losses[0] - ref.losses[-1] > MIN_LEARNING, f"transformers' run did not learn: {ref.losses}"
    run = cv.train(family, cv.mini_config(family), DTYPES[dtype_name], DEV, data[0], data[1], init,
                   use_ligerd=True, lr=LR)
    assert_dispatched(dispatch)
    assert run.losses[0] - run.losses[-1] > MIN_LEARNING, f"ligerd's run did not learn: {run.losses}"
    compare(run, ref, init, dtype_name, f"{family} {dtype_name} {dispatch}")


@pytest.mark.parametrize("family", cv.FAMILIES)
def test_gradient_accumulation(family, data, request):
    """2 micro-batches per step with num_items_in_batch, fp32, local dispatch (the accumulation
    logic is the forward's, not the dispatch's; remote is covered by test_convergence)."""
    ligerd.set_dispatch_mode("local")
    try:
        init, ref_acc = reference(family, "fp32", data, micro_batches=2)
        _, ref_full = reference(family, "fp32", data)
        run = cv.train(family, cv.mini_config(family), torch.float32, DEV, data[0], data[1], init,
                       use_ligerd=True, micro_batches=2, lr=LR)
    finally:
        ligerd.set_dispatch_mode(None)
    compare(run, ref_acc, init, "fp32", f"{family} accumulated vs transformers accumulated")
    if family == "mixtral":  # the router aux loss is per micro-batch (not additive): no
        return               # full-batch equivalence, in transformers as here
    # The accumulated step is the full batch's step: same losses (sum of the micro-batch losses)
    # and the same updates, up to the order of the gradient sums.
    compare(run, ref_full, init, "fp32", f"{family} accumulated vs transformers full batch")
