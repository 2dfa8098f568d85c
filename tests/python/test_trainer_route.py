"""The CPU twin of tests/gpu/test_integrations_gpu.py: Hugging Face's Trainer (use_liger_kernel,
with and without liger_kernel_config; tiny Llama in float32 and bfloat16, tiny Qwen3 in bfloat16)
and TRL 1.12.0's SFTTrainer / DPOTrainer (use_liger_kernel=True), unchanged, through the
compatibility shim, with ligerd's ops run by the float64 reference executor: the same scripts and
the same checks (ligerd.testing.trainer_route) with device "cpu", so that the GPU file's logic is
exercised wherever the CPU suite runs. TRL 1.12 comes from .whl/ or pip download into a scratch
folder (ligerd.testing.trl_grpo.install_trl); the installed TRL is never touched."""

import shutil

import pytest

from ligerd.testing.compat_shim import shim_dir  # noqa: F401  (a fixture)
from ligerd.testing.trainer_route import check_hf, check_trl, run_hf_trainer, run_trl_sft_dpo
from ligerd.testing.trl_grpo import install_trl

pytest.importorskip("accelerate")


@pytest.fixture(scope="module")
def trl_dir(tmp_path_factory):
    pytest.importorskip("datasets")
    target, why = install_trl(tmp_path_factory.mktemp("trl_site"), tmp_path_factory.mktemp("trl_dl"))
    if target is None:
        pytest.skip(why)
    return target


def test_hf_trainer_use_liger_kernel_trains_through_ligerd(shim_dir, tmp_path):
    r = run_hf_trainer(shim_dir, tmp_path, device="cpu", timeout=600)
    shutil.rmtree(tmp_path, ignore_errors=True)
    check_hf(r, "cpu")


def test_trl_sft_and_dpo_use_liger_kernel_train_through_ligerd(shim_dir, trl_dir, tmp_path):
    r = run_trl_sft_dpo(shim_dir, trl_dir, tmp_path, device="cpu", timeout=600)
    shutil.rmtree(tmp_path, ignore_errors=True)
    assert str(trl_dir) in r["trl_file"], r["trl_file"]
    check_trl(r, "cpu")
