"""DTensor inputs to ligerd's row-wise norms (issue 21, tensor/sequence parallelism), on 2 CPU
ranks with gloo: LigerRMSNorm and LigerLayerNorm under torch's SequenceParallel (weights
replicated DTensors, the input sharded on the sequence dimension, 8 tokens over 2 ranks) give the
unsharded result in float64 for the output, the input gradient and the weight/bias gradients
(reduced over the ranks from the Partial local gradients); a replicated input works too; a
sharded hidden dimension, a sharded weight and a plain weight beside a DTensor input are refused
with ligerd errors; LigerSwiGLUMLP under tensor parallelism (ColwiseParallel gate/up with DTensor
outputs, RowwiseParallel down) matches the unsharded MLP. Kernels through the float64 reference launcher (ligerd.testing.ranks)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
dist = pytest.importorskip("torch.distributed", reason="torch.distributed is not available")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from ligerd.testing import dtensor_norm_cases as dn  # noqa: E402
from ligerd.testing import ranks  # noqa: E402

WORLD = 2
NAMES = ["rms_norm", "layer_norm"]
# fp32 kernels (the reference launcher computes in float64 and rounds to fp32 once) against a
# float64 reference on the same fp32 inputs: measured at most 4.4e-7; 2e-6 leaves room, far below
# any real error (a weight gradient not reduced over the ranks is off by O(1)).
ATOL = 2e-6


@pytest.fixture(scope="module")
def results():
    return ranks.run(dn.worker, WORLD, timeout=240)


def _err(a, b):
    return float((a.double() - b).abs().max())


@pytest.mark.parametrize("name", NAMES)
def test_sequence_parallel_matches_unsharded(results, name):
    y, dx, dw, db = dn.reference(name)
    start = 0
    for r, per_rank in enumerate(results):
        out = per_rank[name]
        assert out["y_placements"] == "(Shard(dim=1),)", out["y_placements"]
        assert _err(out["y"], y) <= ATOL
        assert _err(out["dw"], dw) <= ATOL, "weight gradient not reduced over the ranks?"
        if name == "layer_norm":
            assert _err(out["db"], db) <= ATOL
        rows = out["local_rows"][1]
        assert _err(out["dx_local"], dx[:, start:start + rows]) <= ATOL
        start += rows
    assert start == dn.S  # the ranks' shards tile the sequence


@pytest.mark.parametrize("name", NAMES)
def test_replicated_input(results, name):
    y = dn.reference(name)[0]
    for per_rank in results:
        assert _err(per_rank[name]["replicated"], y) <= ATOL


@pytest.mark.parametrize("name", NAMES)
def test_refused_layouts(results, name):
    for per_rank in results:
        errs = per_rank[name]["errors"]
        assert set(errs) == {"hidden", "plain_weight", "sharded_weight"}, errs
        for msg in errs.values():
            assert msg.startswith(f"ligerd op {name}: "), msg
        assert "sharded on its hidden (last) dimension" in errs["hidden"]
        assert "is a plain tensor" in errs["plain_weight"]
        assert "must be replicated" in errs["sharded_weight"]


def test_swiglu_mlp_tensor_parallel_matches_unsharded(results):
    """LigerSwiGLUMLP with ColwiseParallel gate/up (DTensor outputs, 40 intermediate columns over
    2 ranks) and RowwiseParallel down: the output, input gradient and every weight gradient
    against the unsharded MLP in float64, relative to each one's largest value (torch's fp32
    linear layers around the kernel: measured at most 1.8e-7; bound 1e-6)."""
    y, dx, grads = dn.mlp_reference()

    def rel(a, b):
        return _err(a, b) / float(b.abs().max())
    for r, per_rank in enumerate(results):
        out = per_rank["swiglu_mlp"]
        assert rel(out["y"], y) <= 1e-6, r
        assert rel(out["dx"], dx) <= 1e-6, r
        for k, g in grads.items():
            assert rel(out["grads"][k], g) <= 1e-6, (r, k)
        assert out["mixed"].startswith("ligerd op swiglu: one input is a DTensor"), out["mixed"]
        assert out["placements"].startswith("ligerd op swiglu: the inputs must be on one mesh"), out["placements"]
