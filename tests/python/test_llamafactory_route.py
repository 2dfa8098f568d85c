"""LLaMA-Factory's own SFT workflow, unchanged, reaches ligerd through the opt-in compatibility
route (python_client/compat, docs/compat.md): `enable_liger_kernel: true` in its model arguments
trains two SGD steps of a tiny Llama on the CPU, with ligerd's ops run by the float64 reference
executor, and matches the same run without it within float32 noise.

What LLaMA-Factory does with `enable_liger_kernel` (checked with LLaMA-Factory 0.9.5): its model
loader calls `llamafactory.model.model_utils.liger_kernel.apply_liger_kernel`, which for a Llama
imports `liger_kernel.transformers.apply_liger_kernel_to_llama` and calls it with Liger's defaults
before the model is built (for the SFT stage: `require_logits` is False, so fused linear cross
entropy is on). So the loss goes through ligerd's RMSNorm, RoPE, SwiGLU and fused linear cross
entropy, forward and backward.

How it is installed here: LLaMA-Factory 0.9.5 (PyPI's newest) pins transformers <= 5.6 and
trl <= 0.24, which exclude the newest transformers and TRL the CPU suite runs with (pip cannot
install it beside them). So the test pip-installs LLaMA-Factory and its pinned TRL 0.24 without
dependencies into a temporary folder seen only by the subprocess (its other run-time needs, peft,
omegaconf and torchaudio, are in scripts/test-requirements.txt). Two of LLaMA-Factory's own
switches are set for that: DISABLE_VERSION_CHECK=1 (its documented way past its version pins) and
`disable_gradient_checkpointing: true` (its checkpointing wrapper reads `func.func.__self__`, which
transformers 5.25's layers no longer pass; the wrapper fails with or without Liger)."""

import json
import shutil
import textwrap

import pytest

from ligerd.testing.compat_shim import install_no_deps, run, shim_dir  # noqa: F401  (a fixture)

for _m in ("peft", "omegaconf", "torchaudio"):
    pytest.importorskip(_m, reason=f"LLaMA-Factory imports {_m}: pip install -r "
                                   "scripts/test-requirements.txt")

# PyPI's newest LLaMA-Factory and the newest TRL it allows (trl<=0.24.0 in its requirements).
LLAMAFACTORY = ["llamafactory==0.9.5", "trl==0.24.0"]


@pytest.fixture(scope="module")
def llamafactory_dir(tmp_path_factory):
    return install_no_deps(tmp_path_factory.mktemp("llamafactory"), LLAMAFACTORY)


SFT = """
    import os
    os.environ["HF_HUB_OFFLINE"] = "1"       # everything is built on disk here: nothing to download
    os.environ["DISABLE_VERSION_CHECK"] = "1"  # LLaMA-Factory's switch past its pins (docstring)
    import json, torch
    from pathlib import Path
    from importlib.metadata import version
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback
    import ligerd.transformers as lt
    from ligerd import _backend
    from ligerd.testing.ref_executor import RefLauncher
    from llamafactory.train.tuner import run_exp

    # No GPU here: ligerd's ops run through the float64 reference executor (as in the CPU suite).
    launcher = _backend._test_launcher = RefLauncher()
    out = Path(OUT)

    # A tiny Llama and a word-level tokenizer (62 words, pad and eos; vocab 64), saved where
    # LLaMA-Factory loads them from, and an alpaca-format data set registered in dataset_info.json.
    words = [f"w{i}" for i in range(62)]
    vocab = {"<pad>": 0, "<eos>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    torch.manual_seed(SEED)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=64,
                      max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    LlamaForCausalLM(cfg).save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    g = torch.Generator().manual_seed(SEED)
    def sentence(n):
        return " ".join(words[i] for i in torch.randint(0, 62, (n,), generator=g).tolist())
    (out / "data").mkdir()
    (out / "data" / "tiny.json").write_text(json.dumps(
        [{"instruction": sentence(5), "input": "", "output": sentence(6)} for _ in range(8)]))
    (out / "data" / "dataset_info.json").write_text(json.dumps({"tiny": {"file_name": "tiny.json"}}))

    class Watch(TrainerCallback):
        # What LLaMA-Factory built and trained: its norms' forward, and the parameter updates.
        def on_train_begin(self, args, state, control, model=None, **kw):
            self.init = {k: v.detach().clone() for k, v in model.state_dict().items()}
            norms = [m for m in model.modules() if "RMSNorm" in type(m).__name__]
            self.patched = sum(getattr(type(m), "forward", None) is lt.LigerRMSNorm.forward
                               for m in norms)
        def on_train_end(self, args, state, control, model=None, **kw):
            self.upd = {k: v.detach() - self.init[k] for k, v in model.state_dict().items()}
            self.losses = [h["loss"] for h in state.log_history if "loss" in h]

    def train(liger):
        watch = Watch()
        n0 = len(launcher.calls)
        # Plain SGD, so that the parameter update is the gradient.
        run_exp(dict(model_name_or_path=str(out / "model"), stage="sft", do_train=True,
                     finetuning_type="full", dataset="tiny", dataset_dir=str(out / "data"),
                     template="empty", cutoff_len=32, output_dir=str(out / f"run{int(liger)}"),
                     per_device_train_batch_size=2, max_steps=2, learning_rate=0.5, optim="sgd",
                     lr_scheduler_type="constant", logging_steps=1, report_to="none",
                     save_strategy="no", seed=SEED, use_cpu=True, disable_tqdm=True,
                     enable_liger_kernel=liger, disable_gradient_checkpointing=True),
                callbacks=[watch])
        counts = {}
        for c in launcher.calls[n0:]:
            counts[c[0]] = counts.get(c[0], 0) + 1
        return counts, watch

    # The plain run first: applying Liger to a Llama also replaces transformers' module-level RoPE
    # function and classes (as Liger does), which would leak into a plain run after it.
    ops0, w0 = train(False)
    ops1, w1 = train(True)
    rel = {k: ((w1.upd[k] - w0.upd[k]).norm() / w0.upd[k].norm().clamp_min(1e-30)).item()
           for k in w0.upd}
    print("RESULT " + json.dumps({"llamafactory": version("llamafactory"), "trl": version("trl"),
                                  "ops_plain": ops0, "ops_liger": ops1, "loss_plain": w0.losses,
                                  "loss_liger": w1.losses, "update_rel": rel,
                                  "patched_plain": w0.patched, "patched_liger": w1.patched}))
"""


@pytest.mark.parametrize("seed", [0, 7])
def test_llamafactory_sft_enable_liger_kernel_reaches_ligerd(shim_dir, llamafactory_dir, tmp_path,
                                                             seed):
    out = run(shim_dir, f"OUT = {str(tmp_path)!r}\nSEED = {seed}\n" + textwrap.dedent(SFT),
              timeout=300, paths=(llamafactory_dir,))
    r = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    shutil.rmtree(tmp_path, ignore_errors=True)
    assert r["llamafactory"] == "0.9.5" and r["trl"] == "0.24.0", r
    # The plain run touches no ligerd op. With enable_liger_kernel, every one of the 5 norms
    # (2 layers x 2 + final) is ligerd's, and each of the 2 steps runs them forward and backward
    # once (no gradient checkpointing): 10 launches each; RoPE and SwiGLU once per layer and step.
    assert r["ops_plain"] == {}, r
    assert r["patched_plain"] == 0 and r["patched_liger"] == 5, r
    ops = r["ops_liger"]
    assert ops.get("rms_norm_fwd") == 10 and ops.get("rms_norm_bwd") == 10, ops
    for op in ("rope_fwd", "rope_bwd", "swiglu_fwd", "swiglu_bwd"):
        assert ops.get(op) == 4, (op, ops)
    # Fused linear cross entropy (the SFT stage keeps Liger's default): ligerd's chunked LM head
    # (gemm) and cross-entropy kernel run at every step.
    assert ops.get("gemm", 0) >= 2 and ops.get("cross_entropy_fwd", 0) >= 2, ops
    # Tolerances: ligerd's float64 ops inside the float32 model differ from transformers' float32
    # ones by rounding only (seed 0: 1.1e-7 relative in the losses, 4e-6 relative in the worst
    # parameter update). A 1% error put into the reference executor's RMSNorm forward output gives
    # 7.9e-5 in the first loss and 2.6e-2 in the updates; into SwiGLU's dA or RMSNorm's dW, 1e-2
    # in the updates: caught.
    assert len(r["loss_plain"]) == len(r["loss_liger"]) == 2, r
    for a, b in zip(r["loss_plain"], r["loss_liger"]):
        assert abs(a - b) <= 2e-5 * abs(a), r
    assert r["loss_liger"][0] != r["loss_liger"][1], r    # the first step moved the model
    worst = max(r["update_rel"].values())
    assert worst <= 1e-3, r["update_rel"]
