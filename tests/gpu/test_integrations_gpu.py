"""The integrations, unchanged, training on the GPU through the compatibility route (the
`liger_kernel` shim of python_client/compat, docs/compat.md): each run is a fresh interpreter that
sees the shim, the framework's own package and the built ligerd, and trains a tiny model for a few
optimizer steps with ligerd's CUDA kernels, local dispatch (ligerd.testing.trainer_route: scripts,
LaunchLog, checks; the CPU twin, tests/python/test_trainer_route.py, runs the same scripts and checks
through the float64 reference executor).

- Hugging Face `Trainer` with `TrainingArguments(use_liger_kernel=True)`, without and with
  `liger_kernel_config` (RoPE and RMSNorm on, SwiGLU and the fused linear CE off, plain CE on: a
  config the default would not give), on a tiny Llama (float32 and bfloat16) and a tiny Qwen3
  (bfloat16, q/k norms included), 4 AdamW steps each on 8 fixed sequences, against the same run
  without Liger.
- TRL 1.12.0's SFTTrainer (fused linear CE forward, token accuracy) and DPOTrainer (ligerd's chunked
  DPO loss) with `use_liger_kernel=True`, 2 steps each, against TRL's own path.

Checked: the patched modules and functions are ligerd's (norm forwards, MLP forwards, the model's
forward, the RoPE function); every ligerd op that ran ran on CUDA (each launch recorded by wrapping
ligerd._backend.launch) in the model's dtype, once per norm / layer and step; the losses are finite,
fall (HF) and match the plain run within the tolerances written in check_hf / check_trl.

Not here: Axolotl's LigerPlugin and LLaMA-Factory's enable_liger_kernel. Their pinned releases want
other transformers/TRL versions than the GPU machine's, which reaches no registry; their CPU route
tests (tests/python/test_axolotl_route.py, test_llamafactory_route.py) install them unchanged and
show the patching, and what they call is the same ligerd code these runs train with.

TRL 1.12 and its run-time wheels come from .whl/ as in test_trl_grpo_route.py (see there for the
pip download line); without them the TRL test skips naming what is missing, and the HF test needs
only accelerate (the GPU machine has it). Needs the built ligerd on PYTHONPATH (tests/gpu/run.sh)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

from ligerd.testing.trainer_route import (carried_shim, carried_trl, check_hf, check_trl,  # noqa: E402
                                          run_hf_trainer, run_trl_sft_dpo)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """(shim, dependency folder): the shim built once for both tests, and what of .whl/ is carried."""
    return carried_shim(tmp_path_factory, ROOT)


@pytest.fixture(scope="module")
def trl_dir(sites, tmp_path_factory):
    """TRL 1.12.0 in a scratch folder, or a skip naming what is missing."""
    return carried_trl(tmp_path_factory, ROOT, sites[1])


def test_hf_trainer_use_liger_kernel_trains_on_the_gpu(sites, tmp_path):
    shim, deps = sites
    r = run_hf_trainer(shim, tmp_path, device="cuda", extra_path=[deps], timeout=300)
    shutil.rmtree(tmp_path, ignore_errors=True)
    check_hf(r, "cuda")


def test_trl_sft_and_dpo_use_liger_kernel_train_on_the_gpu(sites, trl_dir, tmp_path):
    shim, deps = sites
    r = run_trl_sft_dpo(shim, trl_dir, tmp_path, device="cuda", extra_path=[deps], timeout=300)
    shutil.rmtree(tmp_path, ignore_errors=True)
    assert str(trl_dir) in r["trl_file"], r["trl_file"]
    check_trl(r, "cuda")
