"""The table-driven model types on the GPU (issue 18): one representative per architecture group
(dense exaone4, MoE hunyuan_v1_moe, vision-language paligemma, hybrid linear-attention + MoE
qwen3_next), small models (hidden 256, 2 layers, vocab 4096, 4 experts) built from transformers'
config classes (ligerd.testing.tiny_models), trained 16 AdamW steps from the same initial weights
on the same bigram batches with transformers' modules and with ``apply_liger_kernel_to_<type>()``
(every default patch, ligerd's real kernels, local dispatch), in fp32 and bf16.

Criterion: the noise floor of tests/gpu/test_convergence.py (ligerd/testing/convergence.py,
NoiseFloor): transformers' model trained in a wider dtype (fp64 for fp32, fp32 for bf16) from the
same widened weights is the truth; ligerd's deviation from it (per-step loss, router aux loss,
training update, eval logits) may be at most 1.5x transformers' own plus small floors. Both runs
must learn (the loss falls by MIN_LEARNING). The CPU version of this test, at toy size through the
reference launcher, is tests/python/test_model_types.py::test_group_representative_trains_like_transformers.
Each test writes its record to $LIGERD_CONVERGENCE_OUT (default $OUT/convergence).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ligerd.testing.gpu import require_cuda

torch = require_cuda()
pytest.importorskip("transformers", reason="transformers is not installed")

from ligerd.testing import convergence as cv  # noqa: E402
from ligerd.testing import hf_standins  # noqa: E402
from ligerd.testing import tiny_models as tm  # noqa: E402
from ligerd.testing.gpu import DEV  # noqa: E402

pytestmark = pytest.mark.usefixtures("local_dispatch")

REPRESENTATIVES = {"dense": "exaone4", "moe": "hunyuan_v1_moe", "vision-language": "paligemma",
                   "hybrid": "qwen3_next"}
SIZES = dict(vocab_size=4096, hidden_size=256, intermediate_size=512, num_attention_heads=8,
             num_key_value_heads=4, head_dim=32, moe_intermediate_size=128,
             shared_expert_intermediate_size=128, linear_key_head_dim=32, linear_value_head_dim=32)
STEPS, BATCH, SEQ, LR = 16, 4, 64, 1e-3
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TRUTH = {"fp32": torch.float64, "bf16": torch.float32}
MIN_LEARNING = 0.5


@pytest.fixture(autouse=True)
def missing_ops_only(monkeypatch):
    """Real kernels; a torch stand-in only for an op this build does not have yet."""
    hf_standins.install(monkeypatch, launcher=False)


def _out_dir() -> Path:
    d = os.environ.get("LIGERD_CONVERGENCE_OUT") or os.path.join(os.environ.get("OUT", "out"),
                                                                 "convergence")
    Path(d).mkdir(parents=True, exist_ok=True)
    return Path(d)


# fp32 trajectories of models with a top-k router are not compared: in fp32 the noise floor is
# ~1e-6, and one token rerouted at a near-tie (a 1-ulp difference in its router logits) parts the
# runs by far more from then on. qwen3_next fp32 parted at step 3 by 2.6e-3 nats, its router aux
# loss with it (steps 0-2 agree to 1e-6), while its first-step gradients agree with fp64 within
# 2x transformers' own fp32 error: the signature of a reroute, not of a wrong op. Those models are
# judged in fp32 at the first step (test_first_step_gradients_fp32) and over the trajectory in
# bf16, whose noise floor covers a reroute.
ROUTED = {"moe", "hybrid"}
CASES = [(g, d) for g in sorted(REPRESENTATIVES) for d in sorted(DTYPES) if not (g in ROUTED and d == "fp32")]


@pytest.mark.parametrize("group,dtype_name", CASES, ids=[f"{g}-{d}" for g, d in CASES])
def test_representative_converges(group, dtype_name):
    model_type = REPRESENTATIVES[group]
    dtype = DTYPES[dtype_name]
    cfg = tm.tiny_config(model_type, **SIZES)
    data, ev = cv.make_data(SIZES["vocab_size"], STEPS, BATCH, SEQ)
    init = {k: v.detach().cpu().clone()
            for k, v in tm.build(model_type, seed=1, dtype=dtype, cfg=cfg, device=DEV).state_dict().items()}
    kw = dict(device=DEV, lr=LR, eval_batch=ev)
    truth = tm.train(model_type, cfg, data, cv.widen(init, TRUTH[dtype_name]), use_ligerd=False,
                     dtype=TRUTH[dtype_name], **kw)
    hf = tm.train(model_type, cfg, data, init, use_ligerd=False, dtype=dtype, **kw)
    lig = tm.train(model_type, cfg, data, init, use_ligerd=True, dtype=dtype, **kw)
    for run in (hf, lig):
        assert run.losses[0] - run.losses[-1] > MIN_LEARNING, run.losses
    dh, dl = cv.deviation(hf, truth, init), cv.deviation(lig, truth, init)
    rec = cv.noise_floor_report(f"{model_type} {dtype_name} (model types, {group})", dl, dh, truth,
                                hf, lig)
    name = f"model_types_{model_type}_{dtype_name}.json"
    (_out_dir() / name).write_text(json.dumps(rec, indent=1))
    print(json.dumps({k: rec[k] for k in ("test", "hf_deviation", "ligerd_deviation", "passed")}))
    assert rec["passed"], rec["failures"]


@pytest.mark.parametrize("group", sorted(REPRESENTATIVES))
def test_first_step_gradients_fp32(group):
    """The ops themselves, before a trajectory can part: one fp32 forward and backward at the
    initial weights, every parameter's gradient against fp64 transformers (the same weights,
    widened), within 2x fp32 transformers' own error plus 1e-5 (norm-wise relative, per tensor),
    and the loss within 2x plus 1e-6 relative."""
    model_type = REPRESENTATIVES[group]
    cfg = tm.tiny_config(model_type, **SIZES)
    data, _ = cv.make_data(SIZES["vocab_size"], 1, BATCH, SEQ)
    init = {k: v.detach().cpu().clone() for k, v in
            tm.build(model_type, seed=1, dtype=torch.float32, cfg=cfg, device=DEV).state_dict().items()}
    kw = dict(device=DEV)
    t_loss, truth = tm.first_step_grads(model_type, cfg, data[0], cv.widen(init, torch.float64),
                                        use_ligerd=False, dtype=torch.float64, **kw)
    h_loss, hf = tm.first_step_grads(model_type, cfg, data[0], init, use_ligerd=False, dtype=torch.float32, **kw)
    l_loss, lig = tm.first_step_grads(model_type, cfg, data[0], init, use_ligerd=True, dtype=torch.float32, **kw)
    assert set(lig) == set(truth), set(lig) ^ set(truth)
    assert abs(l_loss - t_loss) <= 2 * abs(h_loss - t_loss) + 1e-6 * abs(t_loss), (l_loss, h_loss, t_loss)
    bad = []
    for name, g in truth.items():
        scale = g.norm().clamp_min(1e-30)
        e_l, e_h = float((lig[name] - g).norm() / scale), float((hf[name] - g).norm() / scale)
        if e_l > 2 * e_h + 1e-5:
            bad.append(f"{name}: ligerd {e_l:.3g}, transformers fp32 {e_h:.3g}")
    assert not bad, f"{model_type}: {len(bad)} of {len(truth)} gradients off:\n" + "\n".join(bad)


@pytest.mark.parametrize("group", sorted(REPRESENTATIVES))
def test_gradient_accumulation_fp32(group):
    """Two micro-batches with transformers' num_items_in_batch through the fused forward: the
    per-step losses follow transformers' accumulated run."""
    model_type = REPRESENTATIVES[group]
    cfg = tm.tiny_config(model_type, **SIZES)
    data, _ = cv.make_data(SIZES["vocab_size"], 4, BATCH, SEQ)
    init = {k: v.detach().cpu().clone()
            for k, v in tm.build(model_type, seed=1, cfg=cfg, device=DEV).state_dict().items()}
    hf = tm.train(model_type, cfg, data, init, use_ligerd=False, device=DEV, lr=LR, micro_batches=2)
    lig = tm.train(model_type, cfg, data, init, use_ligerd=True, device=DEV, lr=LR, micro_batches=2)
    tol = 5e-2 if group in ("moe", "hybrid") else 2e-3  # MoE: router ties (test_convergence.py)
    for a, b in zip(lig.losses, hf.losses):
        assert abs(a - b) <= tol + 2e-4 * abs(b), (group, lig.losses, hf.losses)
