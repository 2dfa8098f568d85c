"""Data parallelism with a ligerd-patched model on the CPU (issue 21): a tiny Llama patched with
``apply_liger_kernel_to_llama`` trained 3 SGD steps on 2 gloo ranks, under DistributedDataParallel
and under FSDP2 (``torch.distributed.fsdp.fully_shard`` per decoder layer and at the root), each
rank on half of every global batch, matches one process trained on the whole batches: the same
losses and the same weights, to float32 noise. ligerd's ops run through the float64 reference
launcher (ligerd.testing.ranks); the model, data and optimiser are
ligerd.testing.data_parallel_cases, shared with the NCCL run in tests/gpu/test_multi_gpu.py."""

from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
if importlib.util.find_spec("transformers") is None:  # imported by the ranks only
    pytest.skip("transformers is not installed", allow_module_level=True)
dist = pytest.importorskip("torch.distributed", reason="torch.distributed is not available")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from ligerd.testing import data_parallel_cases as dp  # noqa: E402
from ligerd.testing import ranks  # noqa: E402

WORLD = 2
# Float32 noise: the ranks' forward and backward see half the batch each, so sums are ordered
# differently and the all-reduced mean of two gradients is not bitwise the one-process gradient.
# Measured: losses equal to 3e-8 relative, weights to 1.2e-7 absolute, while 3 steps move every
# weight tensor by 1e-3 to 3e-1 (a gradient summed instead of averaged would move them twice as far).
LOSS_RTOL, PARAM_ATOL = 1e-6, 1e-6


@pytest.fixture(scope="module")
def reference():
    # one process on the whole batches (a world of 1, forked like the ranks: same launcher)
    return ranks.run(dp.single_worker, 1, WORLD, timeout=240)[0]


def _check(run, ref, mode):
    for r, out in enumerate(run):
        assert out["patched"] == "LigerRMSNorm", f"{mode} rank {r} did not run the patched model"
        assert out["losses"] == pytest.approx(ref["losses"], rel=LOSS_RTOL), (mode, r)
        assert out["params"].keys() == ref["params"].keys()
        for k, p in out["params"].items():
            err = float((p - ref["params"][k]).abs().max())
            moved = float((ref["params"][k] - ref["init"][k]).abs().max())
            assert err <= PARAM_ATOL, f"{mode} rank {r} {k}: max error {err:.3g}"
            assert moved > 100 * PARAM_ATOL, f"{k} barely trained ({moved:.3g}): the check would be blind"


def test_reference_is_the_patched_model(reference):
    assert reference["patched"] == "LigerRMSNorm"
    assert len(reference["losses"]) == dp.STEPS


def test_ddp_matches_one_process(reference):
    _check(ranks.run(dp.worker, WORLD, "ddp", timeout=240), reference, "ddp")


def test_fsdp2_matches_one_process(reference):
    _check(ranks.run(dp.worker, WORLD, "fsdp2", timeout=240), reference, "fsdp2")
