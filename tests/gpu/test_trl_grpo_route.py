"""TRL's own GRPOTrainer, unchanged (TRL 1.12.0: the last release that calls Liger's chunked GRPO
loss), on the GPU through the compatibility shim: `use_liger_kernel=True` runs ligerd's
LigerFusedLinearGRPOLoss and ligerd's RMSNorm/RoPE/SwiGLU kernels on a tiny Llama for two optimizer
steps and matches TRL's own torch loss path (float32, and float64 as the truth), the GPU twin of
tests/python/test_trl_grpo_route.py (same script: ligerd/testing/trl_grpo.py, dapo and sapo).

The GPU machine reaches no registry, so what the run needs travels in .whl/ (or $LIGERD_WHEELHOUSE):
trl-1.12.0 and the wheels of ligerd.testing.trl_grpo.RUN_WHEELS it lacks (for Python 3.12,
`pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64
-d .whl trl==1.12.0 datasets==4.7.0 accelerate==1.16.0 pandas==3.1.1 pyarrow==26.0.1 dill==0.4.0
multiprocess==0.70.18 xxhash==4.1.0 python-dateutil==2.9.0.post0 six==1.17.0 psutil==7.2.2
requests urllib3 charset-normalizer idna certifi`: 68 MB, pyarrow 55 MB of it), and
scikit_build_core + pathspec if it cannot build the shim. They are installed with --no-deps
--no-index into scratch folders (ligerd.testing.trainer_route.carried_sites, shared with
test_integrations_gpu.py); without them the module skips, naming what is missing. Needs the built
ligerd on PYTHONPATH (tests/gpu/run.sh sets it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

from ligerd.testing.trainer_route import carried_sites  # noqa: E402
from ligerd.testing.trl_grpo import TRL_VERSION, run_grpo  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LOSS_TYPES = ("dapo", "sapo")


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """(shim folder, TRL 1.12 folder, dependency folder), or a skip naming what is missing."""
    return carried_sites(tmp_path_factory, ROOT)


def test_trl_grpo_trainer_runs_ligerds_chunked_grpo_loss_on_the_gpu(sites, tmp_path):
    shim, trl_dir, deps = sites
    r = run_grpo(shim, trl_dir, tmp_path, seed=0, loss_types=LOSS_TYPES, device="cuda", extra_path=[deps],
                 timeout=900)
    shutil.rmtree(tmp_path, ignore_errors=True)
    assert r["trl"] == TRL_VERSION and r["shim_grpo_is_ligerd"], r
    for lt in LOSS_TYPES:
        t32, t64, lg = (r["runs"][lt][n] for n in ("torch32", "torch64", "liger"))
        ctx = (lt, {n: {k: v for k, v in x.items() if k not in ("completions", "update_rel", "update_rel_torch32")}
                    for n, x in r["runs"][lt].items()})
        assert t32["grpo_calls"] == t64["grpo_calls"] == 0 and lg["grpo_calls"] == 2, ctx
        assert lg["loss_module"] == "ligerd.chunked_loss.grpo.LigerFusedLinearGRPOLoss", ctx
        assert t32["patched"] == 0 and lg["patched"] == 5, ctx   # 2 layers x 2 norms + final
        # One generation round feeds both steps (see the CPU test's docstring); sampling on the GPU
        # from logits that differ by float32 rounding picks the same tokens unless a uniform draw
        # lands within ~1e-7 of a boundary.
        assert lg["completions"] == t32["completions"] == t64["completions"], ctx
        assert len(lg["loss"]) == len(t32["loss"]) == 2, ctx
        # Tolerances: on the GPU ligerd's layer kernels and the chunked loss's GEMMs compute in
        # float32 (fp32 accumulation, no TF32), so ligerd is expected about as far from float64 as
        # TRL's own float32 path, whose CPU errors are 3e-5 (losses), 7e-4 (grad norms, relative)
        # and 1.2% (updates, relative norm; see tests/python/test_trl_grpo_route.py). Bounds: 3e-4,
        # 2e-3 and 3% from float64, the updates also within 2.5x TRL's own float32 error + 0.1%, and
        # 5e-4 / 4% from TRL's float32 path. A 1% error in the loss moves the losses by 4e-3 and the
        # grad norms by 1%: caught.
        for a32, a64, b in zip(t32["loss"], t64["loss"], lg["loss"]):
            assert torch.isfinite(torch.tensor(b)) and abs(b - a64) <= 3e-4 and abs(b - a32) <= 5e-4, ctx
        for a64, b in zip(t64["grad_norm"], lg["grad_norm"]):
            assert abs(b - a64) <= 2e-3 * a64, ctx
        assert abs(lg["kl"][1] - t64["kl"][1]) <= 2e-4 and lg["kl"][1] > 1e-3, ctx
        worst, own = max(lg["update_rel"].values()), max(t32["update_rel"].values())
        assert worst <= 3e-2 and worst <= 2.5 * own + 1e-3, (lt, worst, own, lg["update_rel"])
        assert max(lg["update_rel_torch32"].values()) <= 4e-2, (lt, lg["update_rel_torch32"])
