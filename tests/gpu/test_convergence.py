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

Tolerances. The only differences between the runs are the replaced ops' rounding (ligerd's
kernels accumulate in fp32 in another order than PyTorch; the fused linear cross-entropy never
rounds the logits to the model dtype and sums its weight gradient over token chunks). Training
amplifies such differences, and how much depends on the model class:
- dense models (llama, mistral, qwen2, phi3, gemma2): smoothly. Measured on an H100 (32 steps at
  lr 1e-3, with torch stand-ins for rope and the losses, which had not landed yet): fp32 losses
  within 2e-4 of transformers' at every step, bf16 within 4e-3, bf16 eval logits within 2.2e-3
  relative. gemma2 at lr 1e-3 had a loss spike (in both runs) after which the runs drifted apart
  (1e-3 at step 21), hence lr 5e-4 here. Limits: fp32 loss 2e-3 + 2e-4 relative, updates 3% (in
  norm), eval logits 3e-3; bf16 (activations rounded to 2^-8 = 4e-3 relative, and an Adam update
  of ~lr on a weight of ~0.02 is a few bf16 ulps, so each update is itself rounded by up to ~10%)
  loss 3e-2 + 5e-3 relative, updates 25%, eval logits 3e-2.
- MoE (mixtral): discontinuously: a rounding-level difference in a router logit near a top-2 tie
  sends a token to another expert. Measured (lr 1e-3): fp32 losses within 1.5e-2 over 32 steps.
  Limits (fp32): loss 5e-2 + 1e-2 relative, aux loss 5%, updates 25%, eval logits 3e-2.

bf16 (every family), and mixtral with gradient accumulation (fp32 and bf16): the noise-floor
criterion, not fixed tolerances. Measured on the H100 with the fixed bf16 limits above, gemma2
(loss 3.73 vs 3.83 at step 29) and mixtral (router-weight updates 0.57 apart, accumulated aux
loss 5.5% apart in fp32) failed, and whether that was ligerd or bf16/top-k noise could not be told
from two runs. So a third run is the yardstick: transformers' model trained in a wider dtype
(fp32 for a bf16 test, fp64 for an fp32 one) from the same initial weights (widened exactly) on
the same data, the "truth". HF's own deviation from the truth is the dtype's noise floor on this
model and data; ligerd's deviation may be at most 1.5x that plus a small absolute floor, per
metric: max per-step loss difference, router aux loss (relative), the training update of all
parameters together and of the worst single tensor (||p - p_truth|| / ||p_truth - p0||), and
the eval logits. The factor and floors are justified in ligerd/testing/convergence.py (NoiseFloor).
The direct ligerd-vs-HF numbers are still printed for those tests. Every test writes a JSON record
of what it measured (deviations, ratios, per-step losses) to $LIGERD_CONVERGENCE_OUT, default
$OUT/convergence (./out/convergence without $OUT), one file per test, for the notes.
Parameters whose gradient is mathematically zero are left out of the update comparison: the key
bias (qwen2's k_proj.bias) adds the same q.b to every score of a query row, which softmax ignores,
so its Adam updates are normalised rounding noise in both runs (measured: 49% apart in bf16).
Both runs must also actually learn (the loss falls by more than 1.0 in 32 steps), so a comparison
of two runs that did nothing cannot pass.

Runtime on an H100: ~150 s measured before the noise-floor runs were added (6 families x 2
dtypes x 2 modes + 6 accumulation tests, references computed once per module); the truth runs add
6 fp32 runs, and mixtral's accumulation tests 5 more runs (fp64 and fp32 truths, bf16 reference
and ligerd): estimated ~3.5 min in all. To split: `-k "fp32 or accumulation"` and `-k bf16`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from ligerd.testing.gpu import require_cuda

torch = require_cuda()
pytest.importorskip("transformers", reason="transformers is not installed")

import ligerd  # noqa: E402

from ligerd.testing import convergence as cv  # noqa: E402  (tests/gpu/convergence.py)
from ligerd.testing.gpu import DEV, ligerd_bin  # noqa: E402

STEPS, BATCH, SEQ = 32, 4, 128
LR = 5e-4  # the mini models learn > MIN_LEARNING in 32 steps; 1e-3 made gemma2 spike
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MOE = {"mixtral"}


@dataclass(frozen=True)
class Tol:
    loss_atol: float
    loss_rtol: float
    aux_rtol: float    # router aux loss, relative
    update: float      # ||p - p_hf|| / ||p_hf - p_init|| per parameter tensor
    logits: float      # relative Frobenius error of the eval logits


# Reasoning and measurements in the module docstring.
TOL = {
    ("dense", "fp32"): Tol(2e-3, 2e-4, 0.0, 0.03, 3e-3),
    ("moe", "fp32"): Tol(5e-2, 1e-2, 0.05, 0.25, 3e-2),
}
# The truth's dtype for the noise-floor criterion (see the docstring).
TRUTH_DTYPE = {"bf16": torch.float32, "fp32": torch.float64}
# Parameters with a mathematically zero gradient (see the docstring): not compared.
ZERO_GRAD_PARAMS = ("self_attn.k_proj.bias",)
MIN_LEARNING = 1.0  # nats the loss must fall over the 32 steps


@pytest.fixture(scope="module")
def data():
    return cv.make_data(32000, STEPS, BATCH, SEQ)


_REFS: dict = {}


def init_state(family, dtype_name):
    key = ("init", family, dtype_name)
    if key not in _REFS:
        _REFS[key] = cv.initial_state(cv.mini_config(family), DTYPES[dtype_name], DEV)
    return _REFS[key]


def reference(family, dtype_name, data, micro_batches=1):
    """transformers' run (cached: the same for both dispatch modes) and the initial weights."""
    key = (family, dtype_name, micro_batches)
    init = init_state(family, dtype_name)
    if key not in _REFS:
        _REFS[key] = cv.train(family, cv.mini_config(family), DTYPES[dtype_name], DEV, data[0],
                              data[1], init, use_ligerd=False, micro_batches=micro_batches, lr=LR)
    return init, _REFS[key]


def truth(family, dtype_name, data, micro_batches=1):
    """transformers' run in TRUTH_DTYPE[dtype_name] from the same (widened) initial weights."""
    key = ("truth", family, dtype_name, micro_batches)
    if key not in _REFS:
        wide = TRUTH_DTYPE[dtype_name]
        init = cv.widen(init_state(family, dtype_name), wide)
        _REFS[key] = cv.train(family, cv.mini_config(family), wide, DEV, data[0], data[1], init,
                              use_ligerd=False, micro_batches=micro_batches, lr=LR)
    return _REFS[key]


def out_dir() -> Path:
    d = os.environ.get("LIGERD_CONVERGENCE_OUT", "").strip()
    return Path(d) if d else Path(os.environ.get("OUT", "out")) / "convergence"


def write_record(record: dict) -> None:
    d = out_dir()
    d.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", record["test"]).strip("_")
    (d / f"{name}.json").write_text(json.dumps(record, indent=1))


@pytest.fixture(params=["local", "remote"])
def dispatch(request):
    mode = request.param
    if mode == "remote":
        if ligerd_bin() is None:
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


def direct(run, ref, init, what):
    """The direct ligerd-vs-transformers numbers (printed; recorded with every test)."""
    mismatch = {k: v for k, v in cv.update_mismatch(run, ref, init).items()
                if not k.endswith(ZERO_GRAD_PARAMS)}
    worst = sorted(mismatch.items(), key=lambda kv: -kv[1])[:5]
    err = cv.rel_err(run.eval_logits, ref.eval_logits)
    dl = max(abs(a - b) for a, b in zip(run.losses, ref.losses))
    print(f"{what}: loss {ref.losses[0]:.4f} -> {ref.losses[-1]:.4f}, max |dloss| {dl:.3e}, "
          f"update mismatch {worst[0][1]:.3e} ({worst[0][0]}), eval logits rel err {err:.3e}")
    return {"max_abs_loss_diff": dl, "worst_update_mismatch": worst[0][1],
            "worst_update_tensor": worst[0][0], "eval_logits_rel_err": err}, worst, err


def compare(run, ref, init, family, dtype_name, what):
    """Direct comparison with fixed tolerances (fp32)."""
    tol = TOL[("moe" if family in MOE else "dense", dtype_name)]
    numbers, worst, err = direct(run, ref, init, what)
    write_record({"test": what, "criterion": "direct (fixed tolerances)", "tolerance": dataclasses.asdict(tol),
                  "direct": numbers, "losses": {"hf": ref.losses, "ligerd": run.losses}})
    for step, (a, b) in enumerate(zip(run.losses, ref.losses)):
        assert abs(a - b) <= tol.loss_atol + tol.loss_rtol * abs(b), (
            f"{what}: step {step} loss {a:.6f} vs transformers {b:.6f}; all steps:\n"
            f"ligerd {[round(v, 5) for v in run.losses]}\nhf     {[round(v, 5) for v in ref.losses]}")
    for a, b in zip(run.aux_losses, ref.aux_losses):
        assert abs(a - b) <= tol.aux_rtol * abs(b), f"{what}: router aux loss {a} vs {b}"
    assert worst[0][1] <= tol.update, f"{what}: training updates differ from transformers': {worst}"
    assert err <= tol.logits, f"{what}: eval logits relative error {err:.3e} > {tol.logits}"



def check_noise_floor(run, ref, init, family, dtype_name, data, what, micro_batches=1):
    """ligerd's deviation from the truth <= 1.5x transformers' + floor (see the docstring)."""
    t = truth(family, dtype_name, data, micro_batches)
    assert t.losses[0] - t.losses[-1] > MIN_LEARNING, f"the truth run did not learn: {t.losses}"
    hf = cv.deviation(ref, t, init, ZERO_GRAD_PARAMS)
    lig = cv.deviation(run, t, init, ZERO_GRAD_PARAMS)
    record = cv.noise_floor_report(what, lig, hf, t, ref, run)
    record["direct"], _, _ = direct(run, ref, init, what + " (direct, not asserted)")
    write_record(record)
    print(f"{what}: deviation from the {TRUTH_DTYPE[dtype_name]} truth, ligerd / HF: " + ", ".join(
        f"{k} {v:.3e} / {hf.metrics()[k]:.3e}" for k, v in lig.metrics().items()))
    assert record["passed"], (f"{what}: ligerd deviates from the wider-dtype truth by more than "
                              f"{cv.NOISE_FACTOR}x transformers' own deviation + floor: "
                              f"{record['failures']}")


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("family", cv.FAMILIES)
def test_convergence(family, dtype_name, dispatch, data):
    init, ref = reference(family, dtype_name, data)
    assert ref.losses[0] - ref.losses[-1] > MIN_LEARNING, f"transformers' run did not learn: {ref.losses}"
    run = cv.train(family, cv.mini_config(family), DTYPES[dtype_name], DEV, data[0], data[1], init,
                   use_ligerd=True, lr=LR)
    assert_dispatched(dispatch)
    assert run.losses[0] - run.losses[-1] > MIN_LEARNING, f"ligerd's run did not learn: {run.losses}"
    what = f"{family} {dtype_name} {dispatch}"
    if dtype_name == "fp32":
        compare(run, ref, init, family, dtype_name, what)
    else:
        check_noise_floor(run, ref, init, family, dtype_name, data, what)


@pytest.mark.parametrize("family", [f for f in cv.FAMILIES if f not in MOE])
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
    compare(run, ref_acc, init, family, "fp32", f"{family} accumulated vs transformers accumulated")
    # The accumulated step is the full batch's step: same losses (sum of the micro-batch losses)
    # and the same updates, up to the order of the gradient sums.
    compare(run, ref_full, init, family, "fp32", f"{family} accumulated vs transformers full batch")


# Seeds (initial weights and data) of the bf16 MoE accumulation test; seed 0 is the module's.
MOE_BF16_SEEDS = (0, 1, 2, 3, 4)


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("family", sorted(MOE))
def test_gradient_accumulation_moe(family, dtype_name, data):
    """mixtral, 2 micro-batches per step, local dispatch, under the noise-floor criterion in both
    dtypes (fp32 against an fp64 truth): the router aux loss is per micro-batch and top-2 routing
    parts at rounding-level ties, so fixed tolerances are arbitrary here (measured: 5.5% aux-loss
    difference in fp32 against a 5% limit). No full-batch comparison: the aux loss is not
    additive over micro-batches, in transformers as here.

    bf16: the criterion on the median over five seeds, not on one seed. Measured on the H100
    (tests/gpu/convergence_spread.py; docs/perf/e2e.md): one
    seed's comparison fails on 3 of 5 seeds for ligerd, and also on 3 of 5 for ligerd with its
    fused linear loss off (transformers' loss on materialised logits), each time on a different
    metric (seed 0: max loss gap 0.27 / 0.11 against HF's 0.05; seeds 2-3: aux loss 0.25-0.28
    against HF's 0.15), while the medians over the seeds are within 1.0-1.5x HF's. A single bf16
    MoE run is one draw of a chaotic process (a router tie flips, then the runs part); HF's own
    draw is no better a yardstick than ligerd's, so both are summarised over seeds. Measured on the
    H100 (medians, ligerd / HF): loss 0.045 / 0.050, aux 0.138 / 0.152, updates 0.129 / 0.120,
    eval logits 0.022 / 0.013; with the gradient's 1/num_items applied to the rounded bf16
    gradients in the backward (before the fused loss took it as its mean's divisor) the loss
    median was 0.091, over the limit: that extra rounding was a real, if small, difference."""
    if dtype_name == "bf16":
        return _moe_accumulation_over_seeds(family)
    ligerd.set_dispatch_mode("local")
    try:
        init, ref_acc = reference(family, dtype_name, data, micro_batches=2)
        run = cv.train(family, cv.mini_config(family), DTYPES[dtype_name], DEV, data[0], data[1],
                       init, use_ligerd=True, micro_batches=2, lr=LR)
    finally:
        ligerd.set_dispatch_mode(None)
    assert ref_acc.losses[0] - ref_acc.losses[-1] > MIN_LEARNING, ref_acc.losses
    assert run.losses[0] - run.losses[-1] > MIN_LEARNING, run.losses
    check_noise_floor(run, ref_acc, init, family, dtype_name, data,
                      f"{family} {dtype_name} accumulated", micro_batches=2)


def _moe_accumulation_over_seeds(family):
    cfg, dt, wide = cv.mini_config(family), torch.bfloat16, TRUTH_DTYPE["bf16"]
    ligs, hfs, seeds = [], [], []
    ligerd.set_dispatch_mode("local")
    try:
        for seed in MOE_BF16_SEEDS:
            data = cv.make_data(32000, STEPS, BATCH, SEQ, seed=1234 + seed)
            init = cv.initial_state(cfg, dt, DEV, seed=seed)
            kw = dict(micro_batches=2, lr=LR)
            truth_run = cv.train(family, cfg, wide, DEV, data[0], data[1], cv.widen(init, wide),
                                 use_ligerd=False, **kw)
            hf = cv.train(family, cfg, dt, DEV, data[0], data[1], init, use_ligerd=False, **kw)
            run = cv.train(family, cfg, dt, DEV, data[0], data[1], init, use_ligerd=True, **kw)
            for r in (truth_run, hf, run):
                assert r.losses[0] - r.losses[-1] > MIN_LEARNING, f"seed {seed}: a run did not learn: {r.losses}"
            hfs.append(cv.deviation(hf, truth_run, init, ZERO_GRAD_PARAMS))
            ligs.append(cv.deviation(run, truth_run, init, ZERO_GRAD_PARAMS))
            seeds.append({"seed": seed, "hf_deviation": hfs[-1].metrics(), "ligerd_deviation": ligs[-1].metrics(),
                          "single_seed_failures": cv.noise_floor_failures(ligs[-1], hfs[-1])})
    finally:
        ligerd.set_dispatch_mode(None)
    lig_m, hf_m = cv.MedianDeviation(ligs), cv.MedianDeviation(hfs)
    failures = cv.noise_floor_failures(lig_m, hf_m)
    what = f"{family} bf16 accumulated, median over seeds {list(MOE_BF16_SEEDS)}"
    write_record({"test": what, "criterion": f"median ligerd <= {cv.NOISE_FACTOR} x median HF + floor",
                  "hf_deviation": hf_m.metrics(), "ligerd_deviation": lig_m.metrics(), "seeds": seeds,
                  "passed": not failures, "failures": failures})
    print(f"{what}: median deviation from the fp32 truth, ligerd / HF: " + ", ".join(
        f"{k} {v:.3e} / {hf_m.metrics()[k]:.3e}" for k, v in lig_m.metrics().items()))
    assert not failures, f"{what}: {failures}"
