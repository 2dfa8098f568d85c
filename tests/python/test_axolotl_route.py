"""Axolotl's own training pipeline, unchanged, reaches ligerd through the opt-in compatibility route
(python_client/compat, docs/compat.md): its Liger plugin (`plugins:
[axolotl.integrations.liger.LigerPlugin]` with liger_rope, liger_rms_norm, liger_glu_activation and
liger_fused_linear_cross_entropy) trains two SGD steps of a tiny Llama on the CPU, with ligerd's
ops run by the float64 reference executor, and matches the same config without the plugin within
float32 noise.

What the plugin does (checked with Axolotl 0.19.0): `LigerPlugin.pre_model_load` imports
`liger_kernel.transformers.monkey_patch.MODEL_TYPE_TO_APPLY_LIGER_FN` (and LigerRMSNorm,
LigerSwiGLUMLP, liger_rotary_pos_emb, ... from their submodules) and, for a Llama, calls
`apply_liger_kernel_to_llama(rope=, cross_entropy=, fused_linear_cross_entropy=, rms_norm=,
swiglu=)` with the config's flags before the model is built. The run is Axolotl's Python API as
its docs show it: `load_cfg` (validation, plugin registration), `load_datasets`, `train`.

How it is installed here: Axolotl 0.19.0 (PyPI's newest) pins transformers==5.16.1, trl==1.9.0,
torch<=2.13 and liger-kernel==0.8.1 (a real Liger-Kernel, which would replace the shim), so pip
cannot install it beside the newest transformers/TRL the CPU suite runs with. The test installs
axolotl, its two contribs packages and its pinned TRL 1.9.0 (Axolotl imports trl.experimental.prm,
which TRL 1.16 no longer has) with `pip install --no-deps --target` into a folder only the
subprocess sees; its other run-time needs are in scripts/test-requirements.txt. Nothing of Axolotl
is patched."""

import json
import shutil
import textwrap

import pytest

from ligerd.testing.compat_shim import install_no_deps, run, shim_dir  # noqa: F401  (a fixture)

for _m in ("peft", "addict", "posthog", "numba", "termcolor", "bitsandbytes", "fastcore",
           "evaluate", "wandb"):
    pytest.importorskip(_m, reason=f"Axolotl imports {_m}: pip install -r "
                                   "scripts/test-requirements.txt")

# PyPI's newest Axolotl, the contribs packages and TRL at its pins.
AXOLOTL = ["axolotl==0.19.0", "axolotl-contribs-lgpl==0.0.7", "axolotl-contribs-mit==0.0.6",
           "trl==1.9.0"]


@pytest.fixture(scope="module")
def axolotl_dir(tmp_path_factory):
    return install_no_deps(tmp_path_factory.mktemp("axolotl"), AXOLOTL)


SETUP = """
    import json, torch
    from pathlib import Path
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    # A tiny Llama and a word-level tokenizer (62 words, pad, eos, bos; vocab 66) saved where Axolotl
    # loads them from, and a completion-format data set (12 words a row).
    out = Path(OUT)
    words = [f"w{i}" for i in range(62)]
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>",
                                        bos_token="<bos>")
    torch.manual_seed(SEED)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=66,
                      max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    g = torch.Generator().manual_seed(SEED)
    def sentence(n):
        return " ".join(words[i] for i in torch.randint(0, 62, (n,), generator=g).tolist())
    (out / "data.jsonl").write_text("\\n".join(json.dumps({"text": sentence(12)}) for _ in range(8)))
"""

TRAIN = """
    import os
    os.environ["HF_HUB_OFFLINE"] = "1"          # everything is on disk here: nothing to download
    os.environ["AXOLOTL_DO_NOT_TRACK"] = "1"    # Axolotl's telemetry off
    os.environ["WANDB_MODE"] = "disabled"
    import json, torch
    from pathlib import Path
    from importlib.metadata import version
    from safetensors.torch import load_file
    import ligerd.transformers as lt
    from ligerd import _backend
    from ligerd.testing.ref_executor import RefLauncher
    from axolotl.utils.dict import DictDefault
    from axolotl.cli.config import load_cfg
    from axolotl.common.datasets import load_datasets
    from axolotl.train import train

    # No GPU here: ligerd's ops run through the float64 reference executor (as in the CPU suite).
    launcher = _backend._test_launcher = RefLauncher()
    out = Path(OUT)
    run_dir = out / f"run{int(LIGER)}"
    # Plain SGD, so that the parameter update is the gradient.
    c = dict(base_model=str(out / "model"), model_type="LlamaForCausalLM",
             tokenizer_type="PreTrainedTokenizerFast",
             datasets=[{"path": str(out / "data.jsonl"), "ds_type": "json", "type": "completion"}],
             dataset_prepared_path=str(run_dir / "prepared"), val_set_size=0, sequence_len=32,
             micro_batch_size=2, gradient_accumulation_steps=1, max_steps=2, num_epochs=1,
             optimizer="sgd", learning_rate=0.5, lr_scheduler="constant", logging_steps=1,
             output_dir=str(run_dir), save_strategy="no", seed=SEED, bf16=False, fp16=False,
             tf32=False, sample_packing=False, dataset_num_proc=1, use_cpu=True)
    if LIGER:
        c.update(plugins=["axolotl.integrations.liger.LigerPlugin"], liger_rope=True,
                 liger_rms_norm=True, liger_glu_activation=True,
                 liger_fused_linear_cross_entropy=True)
    cfg = load_cfg(DictDefault(c))
    meta = load_datasets(cfg=cfg)
    model, _, trainer = train(cfg=cfg, dataset_meta=meta)
    counts = {}
    for call in launcher.calls:
        counts[call[0]] = counts.get(call[0], 0) + 1
    norms = [m for m in model.modules() if "RMSNorm" in type(m).__name__]
    patched = sum(getattr(type(m), "forward", None) is lt.LigerRMSNorm.forward for m in norms)
    init = load_file(str(out / "model" / "model.safetensors"))
    upd = {k: v.detach() - init[k] for k, v in model.state_dict().items() if k in init}
    torch.save(upd, out / f"upd{int(LIGER)}.pt")
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    print("RESULT " + json.dumps({"axolotl": version("axolotl"), "trl": version("trl"),
                                  "ops": counts, "losses": losses, "patched": patched,
                                  "params": len(upd)}))
"""


@pytest.mark.parametrize("seed", [0, 7])
def test_axolotl_liger_plugin_reaches_ligerd(shim_dir, axolotl_dir, tmp_path, seed):
    import torch

    head = f"OUT = {str(tmp_path)!r}\nSEED = {seed}\n"
    run(shim_dir, head + textwrap.dedent(SETUP), timeout=120)
    # Each run in its own interpreter: applying Liger to a Llama replaces transformers' module-level
    # classes and RoPE function, which would leak into a plain run after it.
    r = {}
    for liger in (False, True):
        out = run(shim_dir, head + f"LIGER = {liger}\n" + textwrap.dedent(TRAIN), timeout=400,
                  paths=(axolotl_dir,))
        r[liger] = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    upd = {liger: torch.load(tmp_path / f"upd{int(liger)}.pt") for liger in (False, True)}
    shutil.rmtree(tmp_path, ignore_errors=True)
    assert r[True]["axolotl"] == "0.19.0" and r[True]["trl"] == "1.9.0", r
    # Without the plugin no ligerd op runs; with it every norm (2 layers x 2 + final) is ligerd's,
    # run forward and backward once per step (2 steps, no gradient checkpointing), and RoPE and
    # SwiGLU once per layer and step.
    assert r[False]["ops"] == {} and r[False]["patched"] == 0, r
    assert r[True]["patched"] == 5, r
    ops = r[True]["ops"]
    assert ops.get("rms_norm_fwd") == 10 and ops.get("rms_norm_bwd") == 10, ops
    for op in ("rope_fwd", "rope_bwd", "swiglu_fwd", "swiglu_bwd"):
        assert ops.get(op) == 4, (op, ops)
    # liger_fused_linear_cross_entropy: ligerd's chunked LM head (gemm) and cross-entropy kernel.
    assert ops.get("gemm", 0) >= 2 and ops.get("cross_entropy_fwd", 0) >= 2, ops
    # Tolerances: ligerd's float64 ops inside the float32 model differ from transformers' float32
    # ones by rounding only (seed 0: 5e-7 in losses near 4.2). The same bounds in
    # test_llamafactory_route.py (same model, same ops) catch a 1% error put into RMSNorm's
    # forward output, SwiGLU's dA or RMSNorm's dW (1e-2 or more in the parameter updates).
    a, b = r[False]["losses"], r[True]["losses"]
    assert len(a) == len(b) == 2 and a[0] != a[1], r
    for x, y in zip(a, b):
        assert abs(x - y) <= 2e-5 * abs(x), r
    assert r[False]["params"] == r[True]["params"] > 0, r
    rel = {k: ((upd[True][k] - v).norm() / v.norm().clamp_min(1e-30)).item()
           for k, v in upd[False].items()}
    assert max(rel.values()) <= 1e-3, rel
