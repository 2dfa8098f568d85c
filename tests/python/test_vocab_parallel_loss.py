"""The vocab-parallel fused linear cross-entropy (ligerd.parallel, issue 21's tensor-parallel item)
on 2 and 3 CPU ranks with gloo: loss and gradients against the unsharded loss in float64, with
vocabularies that do not divide by the world size, unequal shards, ignored tokens, ranks that own
no target, label smoothing, z-loss, a bias, several chunks, a DTensor weight, and the errors every
rank must raise together. ligerd's GEMMs run through the float64 reference launcher
(ligerd.testing.ranks); one 3-rank group runs every case (the 2-rank cases on a subgroup).
The same cases run with NCCL on 2 GPUs in tests/gpu/test_multi_gpu.py."""

from __future__ import annotations

import zlib

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
dist = pytest.importorskip("torch.distributed", reason="torch.distributed is not available")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from ligerd._errors import OpInputError  # noqa: E402
from ligerd.parallel import vocab_parallel_fused_linear_cross_entropy, vocab_shard_range  # noqa: E402
from ligerd.testing import ranks  # noqa: E402
from ligerd.testing import vocab_parallel_cases as vc  # noqa: E402

F32, BF16 = torch.float32, torch.bfloat16
BASE = dict(V=37, H=24, BT=23, seed=0, reduction="mean", ls=0.0, z=0.0, ignore=0.0, chunk=0)


def _case(name, **kw):
    c = dict(BASE, name=name, **kw)
    c["seed"] = zlib.crc32(name.encode()) if "seed" not in kw else kw["seed"]
    return c


CASES = [
    # 37 rows over 2 ranks: 19 + 18; chunks of 5 tokens (5 chunks, the last of 3)
    _case("w2_fp32_mean_ignored_bias", world=2, dtype=F32, ignore=0.2, chunk=5, bias=True),
    # 13 + 13 + 11; one chunk; smoothing, z-loss and an upstream gradient other than 1
    _case("w3_fp32_sum_smooth_z", world=3, dtype=F32, reduction="sum", ls=0.1, z=0.01, grad_scale=2.5),
    _case("w2_bf16_mean_ignored", world=2, dtype=BF16, ignore=0.25, chunk=8),
    # shards of the caller's choosing, not torch.chunk's
    _case("w3_bf16_unequal_shards_smooth", world=3, dtype=BF16, ls=0.1, chunk=7, shards=[20, 10, 7]),
    # every target in rank 0's shard: ranks 1 and 2 contribute only to the normaliser
    _case("w3_fp32_targets_on_rank0", world=3, dtype=F32, owner="rank0", chunk=6, ignore=0.1),
    _case("w2_fp32_all_ignored", world=2, dtype=F32, ignore=1.0, chunk=4),
    _case("w3_fp32_one_token", world=3, dtype=F32, BT=1),
    _case("w3_fp32_dtensor_weight", world=3, dtype=F32, dtensor=True, chunk=9, ignore=0.1),
    # reduce_input_grad=False: each rank keeps its part of dx; the parts sum to the whole
    _case("w3_fp32_partial_dx", world=3, dtype=F32, chunk=10, ignore=0.1, partial_dx=True),
]
NO_GRAD = _case("w3_bf16_no_grad", world=3, dtype=BF16, chunk=6, ignore=0.1, ls=0.1, no_grad=True)
ERROR_CASES = [
    # (case, what the message must say)
    (_case("err_hidden", world=2, dtype=F32, breaks="hidden"), "rank 1: input's last dim 24 does not match"),
    (_case("err_targets", world=3, dtype=F32, breaks="targets"), "ranks disagree on the targets"),
    (_case("err_vocab_size", world=2, dtype=F32, breaks="vocab_size"), "expected vocab_size=38"),
    (_case("err_target_range", world=3, dtype=F32, breaks="target_range"), "target index out of range"),
    (_case("err_none", world=2, dtype=F32, breaks="none"), "'none' is not done"),
    (_case("err_softcap", world=2, dtype=F32, breaks="softcap"), "softcap is not supported"),
]

# Tolerances: (loss, relative; gradients, absolute as a fraction of the largest reference
# gradient). fp32: the logits are rounded to fp32 once and the statistics kept in fp32 (measured
# at most 8e-8 loss, 1.4e-7 gradients). bf16: the logits and d logits are rounded to bf16 (2^-9
# relative, as the unsharded fused loss rounds them) and dW is written in bf16 (measured at most
# 7e-5 loss, 5.6e-3 gradients).
TOL = {F32: (1e-6, 1e-6), BF16: (1e-3, 2e-2)}


@pytest.fixture(scope="module")
def results():
    every = CASES + [NO_GRAD] + [c for c, _ in ERROR_CASES]
    got = ranks.run(vc.worker, 3, every, timeout=240)
    return {c["name"]: [got[r][i] for r in range(c["world"])] for i, c in enumerate(every)}


def _close(name, got, ref, atol, rtol=0.0):
    err = (got.double() - ref).abs()
    bound = atol + rtol * ref.abs()
    assert bool((err <= bound).all()), f"{name}: max error {float(err.max()):.3g} (bound {atol:.3g} + {rtol:.3g}|ref|)"


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_matches_unsharded_float64(results, case):
    per_rank = results[case["name"]]
    ref = vc.reference(case)
    rtol, gtol = TOL[case["dtype"]]
    scale = max(float(ref["dx"].abs().max()), float(ref["dW"].abs().max()), 1e-30)
    for r, out in enumerate(per_rank):
        assert "error" not in out, out.get("error")
        _close(f"rank {r} loss", out["loss"], ref["loss"], atol=1e-7, rtol=rtol)
        # dx: every rank returns the whole (all-reduced) input gradient, or its own part
        if not case.get("partial_dx"):
            _close(f"rank {r} dx", out["dx"], ref["dx"], atol=gtol * scale)
        lo, hi = out["bounds"]
        assert out["dW"].shape == (hi - lo, case["H"])
        _close(f"rank {r} dW", out["dW"], ref["dW"][lo:hi], atol=gtol * scale)
        if case.get("bias"):
            _close(f"rank {r} db", out["db"], ref["db"][lo:hi], atol=gtol * scale)
    if case.get("partial_dx"):
        _close("sum of the ranks' dx", sum(o["dx"].double() for o in per_rank), ref["dx"], atol=gtol * scale)
        assert (per_rank[0]["dx"].double() - ref["dx"]).abs().max() > 100 * gtol * scale  # a part, not the whole
    # the shards tile the vocabulary in rank order
    assert [o["bounds"] for o in per_rank] == [vc.shard_bounds(case, r) for r in range(case["world"])]
    assert per_rank[-1]["bounds"][1] == case["V"]


def test_no_grad_gives_the_loss_alone(results):
    ref = vc.reference(NO_GRAD)
    for out in results[NO_GRAD["name"]]:
        assert not out["requires_grad"]
        _close("no_grad loss", out["loss"], ref["loss"], atol=1e-7, rtol=TOL[BF16][0])


def test_all_ignored_is_zero(results):
    for out in results["w2_fp32_all_ignored"]:
        assert float(out["loss"]) == 0.0
        assert not out["dx"].any() and not out["dW"].any()


def test_ranks_without_targets_still_get_gradients(results):
    # ranks 1 and 2 own no target: their dW is the softmax part alone, which is not zero
    outs = results["w3_fp32_targets_on_rank0"]
    for out in outs[1:]:
        assert out["dW"].abs().max() > 0


@pytest.mark.parametrize("case,message", ERROR_CASES, ids=[c["name"] for c, _ in ERROR_CASES])
def test_every_rank_raises_the_same_error(results, case, message):
    per_rank = results[case["name"]]
    msgs = [out.get("error") for out in per_rank]
    assert all(m is not None for m in msgs), msgs
    assert len(set(msgs)) == 1, msgs  # no rank went on into a collective
    assert msgs[0].startswith("ligerd op vocab_parallel_fused_linear_cross_entropy: ")
    assert message in msgs[0], msgs[0]


def test_shard_range_is_torch_chunk():
    for V in (1, 7, 37, 128):
        for world in (1, 2, 3, 4):
            sizes = [b - a for a, b in (vocab_shard_range(V, r, world) for r in range(world))]
            assert sizes == [c.shape[0] for c in torch.arange(V).chunk(world)] + [0] * (
                world - len(torch.arange(V).chunk(world)))
    with pytest.raises(OpInputError, match="rank 3 is not in a world of size 3"):
        vocab_shard_range(10, 3, 3)


def test_needs_an_initialized_process_group():
    assert not dist.is_initialized()
    x, W = torch.randn(3, 4), torch.randn(5, 4)
    with pytest.raises(OpInputError, match="torch.distributed is not initialized"):
        vocab_parallel_fused_linear_cross_entropy(x, W, torch.tensor([0, 1, 2]))


def test_tensor_parallel_head_matches_transformers():
    """The loss on a head sharded by torch's ColwiseParallel (a Shard(0) DTensor weight, 128 rows
    over 2 ranks) equals transformers' loss of the unsharded tiny Llama, with the same head and
    backbone gradients (ligerd.testing.tp_head_cases). fp32 against fp32 (the reference launcher's
    head GEMMs are float64 rounded to fp32, transformers' are fp32): measured at most 1e-7 relative
    loss and 4.6e-7 of the largest gradient; the bounds are 10-20x that."""
    from ligerd.testing import tp_head_cases as tp
    ref = ranks.run(tp.single, 1, timeout=240)[0]
    got = ranks.run(tp.worker, 2, timeout=240)
    for r, out in enumerate(got):
        assert out["head_placements"] == "(Shard(dim=0),)" and out["head_local_rows"] == 64
        assert out["loss"] == pytest.approx(ref["loss"], rel=1e-6), r
        for k in tp.CHECKED:
            scale = float(ref["grads"][k].abs().max())
            err = float((out["grads"][k] - ref["grads"][k]).abs().max())
            assert err <= 1e-5 * scale, f"rank {r} {k}: max error {err:.3g} of {scale:.3g}"
