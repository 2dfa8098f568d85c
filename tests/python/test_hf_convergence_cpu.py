"""The convergence harness of tests/gpu/test_convergence.py on the CPU, at toy size: the six
families trained for a few AdamW steps with and without ligerd's patches (kernels through the
float64 reference launcher, stand-ins for the ops still being written: hf_standins.py), in fp32,
plain and with gradient accumulation (num_items_in_batch). Checks the harness and the patched
training path end to end where CI can run them; the GPU test checks the kernels at mini size."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")

from ligerd.testing import convergence as cv  # noqa: E402
from ligerd.testing import hf_standins  # noqa: E402
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
    # num_items_in_batch reached the fused loss, as the divisor of its mean
    assert calls[-1]["reduction"] == "mean" and calls[-1]["mean_divisor"] is not None
    ref_acc = cv.train(family, cfg, torch.float32, "cpu", data, ev, init, use_ligerd=False, lr=LR,
                       micro_batches=2)
    for a, b in zip(acc.losses, ref_acc.losses):
        assert abs(a - b) <= 1e-4 + 1e-4 * abs(b), (acc.losses, ref_acc.losses)
    if family == "mixtral":  # the router aux loss is per micro-batch (not additive): no full-batch
        return               # equivalence, in transformers as here
    for a, b in zip(acc.losses, ref.losses):  # accumulated step == full-batch step
        assert abs(a - b) <= 1e-4 + 1e-4 * abs(b), (acc.losses, ref.losses)
    assert max(cv.update_mismatch(acc, ref, init).values()) < 1e-2


def _noise_floor_runs(family, steps=8, lr=3e-3):
    """HF bf16, ligerd bf16 and the HF fp32 truth from the same bf16 init, on the CPU."""
    cfg = cv.mini_config(family, **SIZES)
    data, ev = cv.make_data(SIZES["vocab"], steps, BATCH, SEQ, subset=64)
    init = cv.initial_state(cfg, torch.bfloat16, "cpu")
    truth = cv.train(family, cfg, torch.float32, "cpu", data, ev, cv.widen(init, torch.float32),
                     use_ligerd=False, lr=lr)
    hf = cv.train(family, cfg, torch.bfloat16, "cpu", data, ev, init, use_ligerd=False, lr=lr)
    lig = cv.train(family, cfg, torch.bfloat16, "cpu", data, ev, init, use_ligerd=True, lr=lr)
    return init, truth, hf, lig


@pytest.mark.parametrize("family", ["llama", "mixtral"])
def test_noise_floor_criterion_bf16(family):
    """The GPU test's bf16 criterion end to end at toy size: ligerd-bf16 (RMSNorm, SwiGLU through
    the float64 reference executor) is within 1.5x HF-bf16's deviation from the fp32 truth."""
    init, truth, hf, lig = _noise_floor_runs(family)
    dh, dl = cv.deviation(hf, truth, init), cv.deviation(lig, truth, init)
    assert dh.loss > 0 and dh.logits > 0  # bf16 really is noisier than fp32 here
    rec = cv.noise_floor_report(f"{family} bf16 cpu", dl, dh, truth, hf, lig)
    assert rec["passed"], rec["failures"]
    assert set(rec["ligerd_deviation"]) == {"loss", "aux", "update", "update_worst", "logits"}


def _rms_output_5_percent_high(real):
    def h(op, tensors, scalars):
        real(op, tensors, scalars)
        tensors[2].mul_(1.05)  # Y
    return h


def _swiglu_da_half_again(real):
    def h(op, tensors, scalars):
        real(op, tensors, scalars)
        tensors[3].mul_(1.5)  # dA
    return h


@pytest.mark.parametrize("op,defect", [("rms_norm_fwd", _rms_output_5_percent_high),
                                       ("swiglu_bwd", _swiglu_da_half_again)])
def test_noise_floor_criterion_catches_a_defect(monkeypatch, op, defect):
    """The criterion is not vacuous: an RMSNorm whose output is 5% high (fails on loss and
    logits) or a SwiGLU whose dA is 1.5x (fails on the updates) is caught. (A 3-10% error in
    SwiGLU's forward output is not, at this toy size: 2 layers of hidden 64, 8 steps, where the
    MLP's share of the residual stream is small; the GPU test's mini models are 16x wider.)"""
    from ligerd.testing import ref_executor
    monkeypatch.setitem(ref_executor.HANDLERS, op, defect(ref_executor.HANDLERS[op]))
    init, truth, hf, lig = _noise_floor_runs("llama")
    failures = cv.noise_floor_failures(cv.deviation(lig, truth, init), cv.deviation(hf, truth, init))
    assert failures, f"a defect in {op} passed the noise-floor criterion"
