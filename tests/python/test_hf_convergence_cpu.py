"""The convergence harness of tests/gpu/test_convergence.py on the CPU, at toy size: the six
families trained for a few AdamW steps with and without ligerd's patches (kernels through the
float64 reference launcher, stand-ins for the ops still being written: hf_standins.py), in fp32,
plain and with gradient accumulation (num_items_in_batch). Checks the harness and the patched
training path end to end where CI can run them; the GPU test checks the kernels at mini size."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")
if int(transformers.__version__.split(".")[0]) != 5:
    pytest.skip("ligerd patches target transformers 5.x", allow_module_level=True)

import convergence as cv  # noqa: E402  (tests/gpu/convergence.py)
import hf_standins  # noqa: E402
import ligerd.transformers as lt  # noqa: E402

SIZES = dict(hidden=64, layers=2, vocab=256, heads=4, kv_heads=2, intermediate=128,
             expert_intermediate=64)
STEPS, BATCH, SEQ, LR = 6, 4, 16, 1e-3


@pytest.fixture(autouse=True)
def cpu_ops(monkeypatch):
    lt.revert_liger_kernel_patches()
    hf_standins.install(monkeypatch)
    yield
    lt.revert_liger_kernel_patches()


@pytest.mark.parametrize("family", cv.FAMILIES)
def test_training_matches_transformers(family):
    cfg = cv.mini_config(family, **SIZES)
    data, ev = cv.make_data(SIZES["vocab"], STEPS, BATCH, SEQ, subset=64)
    init = cv.initial_state(cfg, torch.float32, "cpu")
    ref = cv.train(family, cfg, torch.float32, "cpu", data, ev, init, use_ligerd=False, lr=LR)
    hf_standins.CALLS.clear()
    run = cv.train(family, cfg, torch.float32, "cpu", data, ev, init, use_ligerd=True, lr=LR)
    # The patched run went through the fused loss (once per step) and nothing was left patched.
    assert sum(n == "liger_fused_linear_cross_entropy" for n, _ in hf_standins.CALLS) == STEPS
    assert not lt.monkey_patch.patched_attributes()
    assert ref.losses[-1] < ref.losses[0]
    for a, b in zip(run.losses, ref.losses):
        assert abs(a - b) <= 1e-4 + 1e-4 * abs(b), (run.losses, ref.losses)
    assert max(cv.update_mismatch(run, ref, init).values()) < 1e-2
    assert cv.rel_err(run.eval_logits, ref.eval_logits) < 1e-4

    acc = cv.train(family, cfg, torch.float32, "cpu", data, ev, init, use_ligerd=True, lr=LR,
                   micro_batches=2)
    calls = [c for n, c in hf_standins.CALLS if n == "liger_fused_linear_cross_entropy"]
    assert calls[-1]["reduction"] == "sum"  # num_items_in_batch reached the fused loss
    ref_acc = cv.train(family, cfg, torch.float32, "cpu", data, ev, init, use_ligerd=False, lr=LR,
                       micro_batches=2)
    for a, b in zip(acc.losses, ref_acc.losses):
        assert abs(a - b) <= 1e-4 + 1e-4 * abs(b), (acc.losses, ref_acc.losses)
    if family == "mixtral":  # the router aux loss is per micro-batch (not additive): no full-batch
        return               # equivalence, in transformers as here
    for a, b in zip(acc.losses, ref.losses):  # accumulated step == full-batch step
        assert abs(a - b) <= 1e-4 + 1e-4 * abs(b), (acc.losses, ref.losses)
    assert max(cv.update_mismatch(acc, ref, init).values()) < 1e-2
