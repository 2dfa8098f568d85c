"""Multi-GPU checks of issue 21 with NCCL, one GPU per rank (2 ranks): the vocab-parallel fused
linear cross-entropy (ligerd.parallel) against the unsharded loss in float64, and a tiny Llama
patched with apply_liger_kernel_to_llama trained under DDP, FSDP2 and FSDP1 against one GPU on the whole
batches, RMSNorm/LayerNorm under torch's SequenceParallel and a SwiGLU MLP under tensor
parallelism (DTensor inputs), and the ranks' agreement on tuned kernel plans. The same cases
run on CPU ranks with gloo in tests/python/test_vocab_parallel_loss.py
and test_ddp_cpu.py (the cases, model and runner are ligerd.testing.vocab_parallel_cases,
data_parallel_cases and ranks). Skips with "needs 2 GPUs" on fewer.

Run on a machine with 2+ GPUs, after the build (docs/multi_gpu.md):

    GPU_TESTS=tests/gpu/test_multi_gpu.py SKIP_BENCH=1 bash tests/gpu/run.sh

Each rank is a fresh spawned process (the parent's CUDA state is not forked) that opens its own
ligerd session on its own device, dispatch mode as the environment sets it (auto by default).

Tolerances: the vocab-parallel ones are the CPU test's (logits and d logits rounded once to the
input dtype, statistics in fp32; cuBLASLt accumulates in fp32 without TF32, as the CPU reference's
float64 GEMM rounded to fp32 does to within a few ulps), with fp32 widened 10x for the GPU's
different summation orders. The data-parallel ones are wider than the CPU test's (1e-6): ligerd's
GPU kernels reduce weight gradients with atomics, in no fixed order; not yet measured on a
multi-GPU machine: tighten them from the first run's errors."""

from __future__ import annotations

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

if torch.cuda.device_count() < 2:
    pytest.skip("needs 2 GPUs", allow_module_level=True)

import torch.distributed as dist  # noqa: E402

if not dist.is_available() or not dist.is_nccl_available():
    pytest.skip("torch.distributed with NCCL is not available", allow_module_level=True)

from ligerd.testing import data_parallel_cases as dp  # noqa: E402
from ligerd.testing import dtensor_norm_cases as dn  # noqa: E402
from ligerd.testing import plan_agreement as pa  # noqa: E402
from ligerd.testing.gpu import ligerd_bin  # noqa: E402
from ligerd.testing import ranks  # noqa: E402
from ligerd.testing import vocab_parallel_cases as vc  # noqa: E402

WORLD = 2
F32, BF16 = torch.float32, torch.bfloat16
BASE = dict(world=WORLD, H=256, BT=777, reduction="mean", ls=0.0, z=0.0, ignore=0.1, chunk=0)
CASES = [
    dict(BASE, name="fp32_odd_vocab", V=8191, dtype=F32, seed=1, bias=True),
    dict(BASE, name="bf16_odd_vocab", V=8191, dtype=BF16, seed=2),
    dict(BASE, name="bf16_smooth_z_chunks", V=5003, dtype=BF16, seed=3, ls=0.1, z=1e-3, chunk=128),
    dict(BASE, name="fp32_sum_targets_on_rank0", V=4097, dtype=F32, seed=4, reduction="sum",
         owner="rank0", chunk=200),
    dict(BASE, name="bf16_dtensor", V=4099, dtype=BF16, seed=5, dtensor=True),
]
TOL = {F32: (1e-5, 1e-5), BF16: (1e-3, 2e-2)}  # (loss rtol, grads atol / max |grad|)
DP_LOSS_RTOL, DP_PARAM_ATOL = 1e-5, 1e-5
NORM_ATOL = 1e-5  # fp32 norms vs float64 (the CPU test's 2e-6, widened for the GPU's reductions)


@pytest.fixture(scope="module")
def vp_results():
    got = ranks.run(vc.worker, WORLD, CASES, "cuda", backend="nccl", timeout=300)
    return {c["name"]: [got[r][i] for r in range(WORLD)] for i, c in enumerate(CASES)}


def _max_err(got, ref):
    return float((got.double() - ref).abs().max())


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vocab_parallel_matches_unsharded_float64(vp_results, case):
    ref = vc.reference(case)
    rtol, gtol = TOL[case["dtype"]]
    scale = max(float(ref["dx"].abs().max()), float(ref["dW"].abs().max()), 1e-30)
    for r, out in enumerate(vp_results[case["name"]]):
        assert "error" not in out, out.get("error")
        assert abs(float(out["loss"]) - float(ref["loss"])) <= rtol * abs(float(ref["loss"])) + 1e-7, \
            (r, float(out["loss"]), float(ref["loss"]))
        lo, hi = out["bounds"]
        assert (lo, hi) == vc.shard_bounds(case, r)
        for name, got, want in (("dx", out["dx"], ref["dx"]), ("dW", out["dW"], ref["dW"][lo:hi])) + (
                (("db", out["db"], ref["db"][lo:hi]),) if case.get("bias") else ()):
            err = _max_err(got, want)
            assert err <= gtol * scale, f"rank {r} {name}: max error {err:.3g} > {gtol * scale:.3g}"


@pytest.fixture(scope="module")
def dp_reference():
    return dp.single(WORLD, device="cuda:0")


@pytest.mark.parametrize("mode", ["ddp", "fsdp2", "fsdp1"])  # FSDP1 refuses CPU ranks: GPU only
def test_data_parallel_matches_one_gpu(dp_reference, mode):
    run = ranks.run(dp.worker, WORLD, mode, "cuda", backend="nccl", timeout=300)
    for r, out in enumerate(run):
        assert out["patched"] == "LigerRMSNorm"
        assert out["losses"] == pytest.approx(dp_reference["losses"], rel=DP_LOSS_RTOL), (mode, r)
        for k, p in out["params"].items():
            err = float((p - dp_reference["params"][k]).abs().max())
            assert err <= DP_PARAM_ATOL, f"{mode} rank {r} {k}: max error {err:.3g}"


@pytest.fixture(scope="module")
def dn_results():
    return ranks.run(dn.worker, WORLD, "cuda", backend="nccl", timeout=300)


@pytest.mark.parametrize("name", ["rms_norm", "layer_norm"])
def test_dtensor_norms_sequence_parallel(dn_results, name):
    """LigerRMSNorm / LigerLayerNorm under torch's SequenceParallel on 2 GPUs (NCCL) against the
    unsharded op in float64 (as tests/python/test_dtensor_norms.py on CPU ranks)."""
    results = dn_results
    y, dx, dw, db = dn.reference(name)
    start = 0
    for r, per_rank in enumerate(results):
        out = per_rank[name]
        assert out["y_placements"] == "(Shard(dim=1),)"
        assert _max_err(out["y"], y) <= NORM_ATOL
        assert _max_err(out["dw"], dw) <= NORM_ATOL
        if db is not None:
            assert _max_err(out["db"], db) <= NORM_ATOL
        rows = out["local_rows"][1]
        assert _max_err(out["dx_local"], dx[:, start:start + rows]) <= NORM_ATOL
        start += rows
        assert set(out["errors"]) == {"hidden", "plain_weight", "sharded_weight"}


def test_dtensor_swiglu_mlp_tensor_parallel(dn_results):
    """LigerSwiGLUMLP with ColwiseParallel gate/up and RowwiseParallel down on 2 GPUs against the
    unsharded MLP in float64 (relative to each one's largest value; torch's fp32 GEMMs around the
    kernel, TF32 off as torch's default leaves it in the fresh rank processes: the CPU test's 1e-6
    widened to 1e-5)."""
    y, dx, grads = dn.mlp_reference()
    for r, per_rank in enumerate(dn_results):
        out = per_rank["swiglu_mlp"]
        for name, got, want in [("y", out["y"], y), ("dx", out["dx"], dx)] + [
                (k, out["grads"][k], g) for k, g in grads.items()]:
            rel = _max_err(got, want) / float(want.abs().max())
            assert rel <= 1e-5, (r, name, rel)
        assert "mixed" in out and "placements" in out


# Shapes the daemon tunes (as tests/gpu/test_tune.py: seconds each) and others it does not.
TUNE = ["rms_norm_fwd:bf16:4096x4096", "swiglu_fwd:bf16:4096x14336"]
PLAN_CASES = [["rms_norm_fwd", "bf16", 4096, 4096], ["swiglu_fwd", "bf16", 4096, 14336],
              ["rms_norm_fwd", "bf16", 1000, 2880], ["swiglu_fwd", "f16", 777, 2880]]


def test_ranks_plan_the_same_kernels():
    """Issue 21's tuning agreement: after ``ligerctl tune`` on the node's daemon, 2 ranks (one GPU
    each, local executors reading the daemon's cache) plan the same config and kernels for the same
    shapes, the tuned shapes from the DB on both ranks."""
    import os
    import pathlib
    import subprocess
    binary = ligerd_bin()
    if binary is None:
        pytest.skip("LIGERD_BIN does not name a built ligerd binary (tests/gpu/run.sh sets it)")
    ligerctl = os.environ.get("LIGERCTL_BIN") or str(pathlib.Path(binary).parents[1] / "client" / "ligerctl")
    from ligerd.testing.gpu import Daemon
    d = Daemon(binary, cache_dir=None, prefix="ligerd-multi-gpu-tune-")
    try:
        p = subprocess.run([ligerctl, f"--socket={d.socket}", "tune", *TUNE, "--trials=3"],
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout + p.stderr
        plans = ranks.run(pa.worker, WORLD, d.cache, PLAN_CASES, backend="nccl", timeout=300)
    finally:
        d.stop()
    for i, case in enumerate(PLAN_CASES):
        a, b = plans[0][i], plans[1][i]
        assert a == b, (case, a, b)
        assert a["tuned"] == (f"{case[0]}:{case[1]}:{case[2]}x{case[3]}" in TUNE), (case, a)
