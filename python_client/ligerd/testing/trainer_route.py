"""Hugging Face's Trainer and TRL 1.12's SFTTrainer / DPOTrainer, unchanged, training through the
compatibility shim (python_client/compat, docs/compat.md): the scripts and helpers of
tests/gpu/test_integrations_gpu.py, shaped so that the same scripts also run on a machine without
a GPU (DEVICE = "cpu": ligerd's ops then go through the float64 reference executor, as in the CPU
suite), which is how they are exercised before a GPU sees them.

Each script runs in a fresh interpreter whose PYTHONPATH names the shim's --target folder (so that
``import liger_kernel`` is ligerd), TRL 1.12 and its carried run-time wheels where asked, and
ligerd; it prints one line ``RESULT {json}``. Every launch of a ligerd op is recorded by wrapping
``ligerd._backend.launch`` (LaunchLog): which op, on which device type, in which dtype, so a test
can tell that ligerd's kernels ran on CUDA, not merely that something was patched.

carried_shim() / carried_trl() / carried_sites() are the GPU tests' fixture bodies: the shim built,
the wheels of ligerd.testing.trl_grpo.RUN_WHEELS and TRL 1.12.0 installed from .whl/ (the GPU machine
reaches no registry), or a pytest skip naming what is missing; shared by test_trl_grpo_route.py and
test_integrations_gpu.py."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from ligerd.testing.compat_shim import build_shim
from ligerd.testing.compat_shim import run_result as shim_run_result
from ligerd.testing.trl_grpo import RUN_WHEELS, TRL_VERSION, install_trl, install_wheels

# What TRL 1.12's trainers import at run time beyond torch and transformers.
TRL_IMPORTS = ("trl", "datasets", "accelerate", "pandas", "pyarrow")


# ------------------------------------------------------------------------------------------
# the fixture body: shim, TRL 1.12, carried wheels

def _importable(modules, path) -> str:
    """"" if `modules` import in a fresh interpreter with `path` before PYTHONPATH, else the
    error's last line."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, path), os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, "-c", "; ".join(f"import {m}" for m in modules)], capture_output=True,
                       text=True, env=env)
    return "" if p.returncode == 0 else (p.stderr.strip().splitlines() or ["?"])[-1]


def carried_shim(tmp_path_factory, root: Path):
    """(shim folder, dependency folder) for the GPU tests, which import the built ligerd: the wheels
    of RUN_WHEELS but TRL that the wheel folder of the source tree `root` holds, installed with
    --no-deps into a scratch folder, and the shim built from `root`'s python_client/compat. Skips
    the calling test (pytest.skip) naming what is missing (accelerate, needed by every Trainer, or
    what building the shim needs)."""
    import pytest
    deps = tmp_path_factory.mktemp("trl_deps")
    missing = install_wheels([n for n in RUN_WHEELS if n != "trl"], deps, root=root)
    err = _importable(["accelerate"], [deps])
    if err:
        pytest.skip(f"accelerate is not importable ({err}); carry its wheel in .whl/ "
                    f"(no wheel found for: {', '.join(missing) or 'none'})")
    # The shim is built with pip --no-build-isolation: scikit-build-core from the wheels if absent.
    old = os.environ.get("PYTHONPATH")
    if importlib.util.find_spec("scikit_build_core") is None:
        tools = tmp_path_factory.mktemp("build_tools")
        lacking = install_wheels(["scikit_build_core", "pathspec"], tools, root=root)
        if lacking:
            pytest.skip(f"scikit-build-core is not importable and .whl/ lacks {lacking}: cannot build the shim")
        os.environ["PYTHONPATH"] = os.pathsep.join([str(tools), old or ""])
    try:
        shim = build_shim(tmp_path_factory.mktemp("liger_kernel_shim"), tmp_path_factory.mktemp("shim_src"),
                          compat=root / "python_client" / "compat")
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    return shim, deps


def carried_trl(tmp_path_factory, root: Path, deps: Path) -> Path:
    """TRL 1.12.0 installed (--no-deps) into a scratch folder from `root`'s wheel folder (else
    pip download), its run-time needs importable with `deps` (carried_shim's); or a pytest skip
    naming what is missing."""
    import pytest
    trl_dir, why = install_trl(tmp_path_factory.mktemp("trl_site"), tmp_path_factory.mktemp("trl_dl"), root=root)
    if trl_dir is None:
        pytest.skip(f"TRL {TRL_VERSION} not installable here: {why}")
    err = _importable(TRL_IMPORTS, [trl_dir, deps])
    if err:
        pytest.skip(f"TRL {TRL_VERSION}'s run-time needs ({', '.join(TRL_IMPORTS)}) are not importable ({err}); "
                    f"carry their wheels in .whl/ (ligerd.testing.trl_grpo.RUN_WHEELS)")
    return trl_dir


def carried_sites(tmp_path_factory, root: Path):
    """(shim folder, TRL 1.12 folder, dependency folder): carried_shim then carried_trl."""
    shim, deps = carried_shim(tmp_path_factory, root)
    return shim, carried_trl(tmp_path_factory, root, deps), deps


def run_result(code: str, out: Path, *, device: str, path=(), timeout: float = 600) -> dict:
    """compat_shim.run_result, offline (HF_HUB_OFFLINE) and without tokenizer threads."""
    return shim_run_result(code, out, device=device, path=path, timeout=timeout,
                           env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})


# ------------------------------------------------------------------------------------------
# used inside the scripts (imported there from ligerd.testing.trainer_route)

class LaunchLog:
    """Records every ligerd op launch of this process: ``(op, device type, dtype)`` of its first
    tensor. install() wraps ``ligerd._backend.launch`` (which ``_backend.call`` and every op reach);
    the launch itself is unchanged (the CPU reference executor or the CUDA kernels)."""

    def __init__(self):
        self.calls: list[tuple[str, str, str]] = []

    def install(self) -> "LaunchLog":
        from ligerd import _backend
        inner = _backend.launch

        def launch(op, tensors, scalars):
            t = next((x for x in tensors if x is not None), None)
            self.calls.append((op, t.device.type if t is not None else "none",
                               str(t.dtype).rpartition(".")[2] if t is not None else "none"))
            return inner(op, tensors, scalars)

        _backend.launch = launch
        return self

    def summary(self, since: int = 0) -> dict:
        """{op: {"n": launches, "devices": [...], "dtypes": [...]}} of the launches after `since`."""
        out: dict = {}
        for op, dev, dt in self.calls[since:]:
            e = out.setdefault(op, {"n": 0, "devices": set(), "dtypes": set()})
            e["n"] += 1
            e["devices"].add(dev)
            e["dtypes"].add(dt)
        return {op: {"n": e["n"], "devices": sorted(e["devices"]), "dtypes": sorted(e["dtypes"])}
                for op, e in sorted(out.items())}


def _func_module(f) -> str:
    f = getattr(f, "__func__", f)
    return f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', type(f).__name__)}"


def patch_summary(model) -> dict:
    """What of `model` is ligerd's: its RMSNorms (all, and those whose forward is LigerRMSNorm's),
    its decoder MLPs (all, and those whose forward comes from ligerd), the forward of the model
    itself (under accelerate's mixed-precision wrapper, if any: the ``_original_forward`` it keeps),
    and the RoPE function its modeling module calls."""
    import ligerd.transformers as lt
    norms = [m for m in model.modules() if "RMSNorm" in type(m).__name__]
    mlps = [m for n, m in model.named_modules() if n.endswith(".mlp")]
    modeling = sys.modules.get(type(model).__module__)
    rope = getattr(modeling, "apply_rotary_pos_emb", None)
    return dict(norms=len(norms),
                norms_ligerd=sum(getattr(m.forward, "__func__", None) is lt.LigerRMSNorm.forward for m in norms),
                mlps=len(mlps), mlps_ligerd=sum(_func_module(m.forward).startswith("ligerd.") for m in mlps),
                forward=_func_module(getattr(model, "_original_forward", model.forward)),
                rope=_func_module(rope) if rope is not None else None)


def tiny_causal_lm(arch: str, vocab: int, seed: int):
    """A freshly initialised 2-layer Llama or Qwen3 (float32, seeded), small enough for a few steps
    in well under a second on a GPU; grouped-query attention (4 heads, 2 KV heads)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM
    torch.manual_seed(seed)
    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=128, pad_token_id=0,
                  eos_token_id=1, bos_token_id=1)
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    if arch == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(head_dim=16, **common))
    raise ValueError(f"tiny_causal_lm: unknown arch {arch!r} (llama, qwen3)")


def word_tokenizer(n_words: int):
    """A word-level tokenizer built in memory (no download): <pad>=0, <eos>=1, then w0..w{n-1}."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    words = [f"w{i}" for i in range(n_words)]
    vocab = {"<pad>": 0, "<eos>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>"), words


# ------------------------------------------------------------------------------------------
# Hugging Face Trainer(TrainingArguments(use_liger_kernel=True))

HF_SCRIPT = """
    import torch, transformers
    from transformers import Trainer, TrainingArguments
    import ligerd.transformers as lt
    from ligerd import _backend
    from ligerd.testing.trainer_route import LaunchLog, patch_summary, tiny_causal_lm

    log = LaunchLog().install()
    if DEVICE == "cpu":
        # No GPU: ligerd's ops run through the float64 reference executor (as in the CPU suite).
        from ligerd.testing.ref_executor import RefLauncher
        _backend._test_launcher = RefLauncher()
    else:
        torch.backends.cuda.matmul.allow_tf32 = False   # fp32 GEMMs in fp32 on both sides

    VOCAB = 96

    class Data(torch.utils.data.Dataset):
        # A fixed, seeded set of 8 sequences of 24 tokens: two passes of batch 4 a step over them
        # (STEPS steps) are enough for AdamW to bring the loss down from ln(96) ~ 4.56.
        def __init__(self):
            g = torch.Generator().manual_seed(SEED)
            self.ids = torch.randint(2, VOCAB, (8, 24), generator=g)
        def __len__(self):
            return len(self.ids)
        def __getitem__(self, i):
            return {"input_ids": self.ids[i], "labels": self.ids[i].clone()}

    class FirstGrads(transformers.TrainerCallback):
        # The gradients of step 0 (same weights in every run of an arch and dtype), after clipping,
        # before the optimizer: the forward and backward of the whole model, compared per parameter.
        def __init__(self, model):
            self.model, self.grads = model, None
        def on_pre_optimizer_step(self, args, state, control, **kw):
            if self.grads is None:
                self.grads = {n: p.grad.detach().double().cpu() for n, p in self.model.named_parameters()
                              if p.grad is not None}

    first = {}

    def train(arch, dtype, liger, config):
        model = tiny_causal_lm(arch, VOCAB, SEED).to(getattr(torch, dtype))
        grads = FirstGrads(model)
        args = TrainingArguments(output_dir=OUT, use_liger_kernel=liger, liger_kernel_config=config,
                                 max_steps=STEPS, per_device_train_batch_size=4, learning_rate=3e-3,
                                 lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                                 max_grad_norm=1.0, report_to=[], use_cpu=DEVICE == "cpu",
                                 save_strategy="no", logging_steps=1, disable_tqdm=True, seed=SEED,
                                 data_seed=SEED, dataloader_num_workers=0)
        trainer = Trainer(model=model, args=args, train_dataset=Data(), callbacks=[grads])
        n0 = len(log.calls)
        trainer.train()      # transformers 5.x applies Liger (here: ligerd) in train()
        # Per parameter |grad - the plain run's| / |the plain run's grad| at step 0 (plain runs first).
        key = (arch, dtype)
        if not liger:
            first[key] = grads.grads
        base = first.get(key)
        grad0_rel = None if liger is False or base is None else {
            n: ((g - base[n]).norm() / base[n].norm().clamp_min(1e-30)).item()
            for n, g in grads.grads.items() if n in base and base[n].norm() > 0}
        hist = [h for h in trainer.state.log_history if "loss" in h and "train_loss" not in h]
        r = dict(arch=arch, dtype=dtype, liger=liger, config=config, loss=[h["loss"] for h in hist],
                 grad_norm=[h.get("grad_norm") for h in hist], ops=log.summary(n0),
                 patched=patch_summary(trainer.model), grad0_rel=grad0_rel,
                 grads_compared=len(grad0_rel or {}), params=len(grads.grads))
        # Applying ligerd to a model type also replaces transformers' module-level classes and RoPE
        # function (as Liger does): undo that, or it leaks into the next plain run.
        lt.revert_liger_kernel_patches()
        return r

    runs = {}
    for name, arch, dtype, liger, config in RUNS:
        runs[name] = train(arch, dtype, liger, config)
    print("RESULT " + json.dumps({"transformers": transformers.__version__, "runs": runs}))
"""

# The HF Trainer runs: (name, arch, dtype, use_liger_kernel, liger_kernel_config). Plain runs first
# (see revert_liger_kernel_patches above). float32 pairs are the tight comparison; bfloat16 the
# dtype a GPU trains in. The config run turns SwiGLU and the fused linear CE off and plain CE on, a
# config the default would not give, so that the ops that ran show it was honoured.
CONFIG = {"rope": True, "swiglu": False, "rms_norm": True, "cross_entropy": True,
          "fused_linear_cross_entropy": False}
HF_RUNS = (
    ("llama_f32_plain", "llama", "float32", False, None),
    ("llama_f32_liger", "llama", "float32", True, None),
    ("llama_bf16_plain", "llama", "bfloat16", False, None),
    ("llama_bf16_liger", "llama", "bfloat16", True, None),
    ("llama_bf16_config", "llama", "bfloat16", True, CONFIG),
    ("qwen3_bf16_plain", "qwen3", "bfloat16", False, None),
    ("qwen3_bf16_liger", "qwen3", "bfloat16", True, None),
)


def run_hf_trainer(shim_dir: Path, out: Path, *, device: str, seed: int = 0, steps: int = 4, runs=HF_RUNS,
                   extra_path=(), timeout: float = 600) -> dict:
    """HF_SCRIPT's RESULT: per run, the logged losses and grad norms, the ligerd ops that ran
    (LaunchLog.summary) and what of the model was ligerd's (patch_summary)."""
    code = f"import json\nSEED = {seed}\nSTEPS = {steps}\nRUNS = {list(runs)!r}\n" + textwrap.dedent(HF_SCRIPT)
    return run_result(code, out, device=device, path=[shim_dir, *extra_path], timeout=timeout)


# ------------------------------------------------------------------------------------------
# TRL 1.12: SFTTrainer and DPOTrainer with use_liger_kernel=True

TRL_SCRIPT = """
    import copy, torch
    import trl
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer
    import liger_kernel.chunked_loss as lk
    import ligerd.chunked_loss as lc
    import ligerd.transformers as lt
    from ligerd import _backend
    from ligerd.testing.trainer_route import LaunchLog, patch_summary, tiny_causal_lm, word_tokenizer

    log = LaunchLog().install()
    if DEVICE == "cpu":
        from ligerd.testing.ref_executor import RefLauncher
        _backend._test_launcher = RefLauncher()
    else:
        torch.backends.cuda.matmul.allow_tf32 = False

    tokenizer, words = word_tokenizer(62)   # vocab 64
    g = torch.Generator().manual_seed(SEED)
    def sentence(n):
        return " ".join(words[i] for i in torch.randint(0, len(words), (n,), generator=g).tolist())
    sft_data = Dataset.from_dict({"text": [sentence(12) for _ in range(8)]})
    dpo_data = Dataset.from_dict({"prompt": [sentence(5) for _ in range(4)],
                                  "chosen": [" " + sentence(4) for _ in range(4)],
                                  "rejected": [" " + sentence(3) for _ in range(4)]})

    # Count the calls of ligerd's chunked DPO loss (its forward: TRL calls the module).
    dpo_calls = [0]
    inner_forward = lc.LigerFusedLinearDPOLoss.forward
    def counted(self, *a, **k):
        dpo_calls[0] += 1
        return inner_forward(self, *a, **k)
    lc.LigerFusedLinearDPOLoss.forward = counted

    common = dict(output_dir=OUT, max_steps=STEPS, per_device_train_batch_size=2, learning_rate=1e-2,
                  lr_scheduler_type="constant", warmup_steps=0, report_to=[], use_cpu=DEVICE == "cpu",
                  save_strategy="no", logging_steps=1, disable_tqdm=True, seed=SEED, data_seed=SEED)

    def finish(trainer, n0, **extra):
        hist = [h for h in trainer.state.log_history if "loss" in h and "train_loss" not in h]
        r = dict(loss=[h["loss"] for h in hist], grad_norm=[h.get("grad_norm") for h in hist],
                 ops=log.summary(n0), patched=patch_summary(trainer.model), **extra)
        lt.revert_liger_kernel_patches()
        return r

    def sft(liger):
        model = tiny_causal_lm("llama", 64, SEED)
        args = SFTConfig(use_liger_kernel=liger, max_length=32, dataset_num_proc=None, **common)
        trainer = SFTTrainer(model=model, args=args, train_dataset=sft_data, processing_class=tokenizer)
        n0 = len(log.calls)
        trainer.train()
        acc = [h.get("mean_token_accuracy") for h in trainer.state.log_history if "loss" in h]
        return finish(trainer, n0, token_accuracy=acc, bf16=bool(args.bf16))

    def dpo(liger):
        model = tiny_causal_lm("llama", 64, SEED)
        ref = copy.deepcopy(model)
        args = DPOConfig(use_liger_kernel=liger, **common)
        trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=dpo_data,
                             processing_class=tokenizer)
        n0, c0 = len(log.calls), dpo_calls[0]
        trainer.train()
        loss_cls = type(getattr(trainer, "liger_loss", None))
        return finish(trainer, n0, dpo_calls=dpo_calls[0] - c0, bf16=bool(args.bf16),
                      loss_module=f"{loss_cls.__module__}.{loss_cls.__qualname__}")

    runs = {"sft_plain": sft(False), "sft_liger": sft(True), "dpo_plain": dpo(False), "dpo_liger": dpo(True)}
    print("RESULT " + json.dumps({"trl": trl.__version__, "trl_file": trl.__file__,
                                  "shim_dpo_is_ligerd": lk.LigerFusedLinearDPOLoss is lc.LigerFusedLinearDPOLoss,
                                  "runs": runs}))
"""


def run_trl_sft_dpo(shim_dir: Path, trl_dir: Path, out: Path, *, device: str, seed: int = 0, steps: int = 2,
                    extra_path=(), timeout: float = 600) -> dict:
    """TRL_SCRIPT's RESULT (TRL 1.12 from `trl_dir`): SFT and DPO, each plain and with
    use_liger_kernel=True, same seed and data: losses, grad norms, ligerd ops, what was patched."""
    code = f"import json\nSEED = {seed}\nSTEPS = {steps}\n" + textwrap.dedent(TRL_SCRIPT)
    return run_result(code, out, device=device, path=[shim_dir, trl_dir, *extra_path], timeout=timeout)


# ------------------------------------------------------------------------------------------
# the checks (tests/gpu/test_integrations_gpu.py with device "cuda"; the CPU suite's
# tests/python/test_trainer_route.py with "cpu", through the reference executor)

LAYER_OPS = {"rms_norm_fwd", "rms_norm_bwd", "rope_fwd", "rope_bwd", "swiglu_fwd", "swiglu_bwd"}
FLCE_OPS = {"gemm", "cross_entropy_fwd"}   # ligerd's fused linear cross-entropy: chunk GEMMs + CE
LN2 = 0.6931471805599453


def _ops_on(run: dict, device: str, ctx) -> set:
    """The ops of a run, each asserted to have run on `device` only."""
    for op, e in run["ops"].items():
        assert e["devices"] == [device], (ctx, op, e)
    return set(run["ops"])


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def check_hf(r: dict, device: str, steps: int = 4, runs=HF_RUNS) -> None:
    """HF_SCRIPT's result: plain runs touch no ligerd op; use_liger_kernel=True puts ligerd's
    RMSNorm, RoPE, SwiGLU and fused linear CE (or, under CONFIG, RMSNorm, RoPE and plain CE only) in
    the model, and every one of them ran on `device` in the model's dtype, once per norm / layer and
    step, forward and backward; the losses are finite, fall, and follow the plain run's.

    Tolerances (the plain run is the same model, seed and data without ligerd): measured on the CPU
    (ligerd's ops in float64 inside the model's dtype), float32 losses agree to 1e-5 over 4 AdamW
    steps, grad norms to 1e-5 (relative) and step 0's gradients to 6e-7 per parameter (relative
    norm); bfloat16 losses to 8e-4, grad norms to 0.9% (the norm is itself a bfloat16 number: 2
    ulps) and step-0 gradients to 1.4% (Qwen3's k_norm weight). Bounds: float32 1e-3, 1% and 3e-4
    (on the GPU both sides are float32 kernels without TF32, ordered differently: ~1e-6 expected);
    bfloat16 3e-2, 5% and 8% (the GPU's bfloat16 GEMMs and kernels round differently from the
    CPU's: room for twice the measured error and more). The float32 gradients are the sharp check:
    AdamW's update hardly depends on a gradient's scale, so a kernel error shows in the losses late
    and weakly. The loss must fall by 0.1 over the steps (measured: 0.37 for the Llama, 0.46 for the
    Qwen3, from ln 96)."""
    for name, arch, dtype, liger, config in runs:
        x, ctx = r["runs"][name], (name, {k: v for k, v in r["runs"][name].items() if k != "config"})
        loss, p = x["loss"], x["patched"]
        assert len(loss) == steps and all(math.isfinite(v) for v in loss), ctx
        assert loss[-1] < loss[0] - 0.1, ctx
        ops = _ops_on(x, device, ctx)
        if not liger:
            assert ops == set() and p["norms_ligerd"] == 0 and p["mlps_ligerd"] == 0, ctx
            assert p["forward"].startswith("transformers."), ctx
            continue
        layers, cfg = 2, config or {}
        # What is ligerd's in the model (the CPU route tests' check, here after training on `device`).
        assert p["norms"] == p["norms_ligerd"] == (9 if arch == "qwen3" else 5), ctx   # + q/k norms
        assert p["rope"] == "ligerd.transformers.rope.liger_rotary_pos_emb", ctx
        swiglu, flce = cfg.get("swiglu", True), cfg.get("fused_linear_cross_entropy", True)
        assert p["mlps_ligerd"] == (layers if swiglu else 0), ctx
        assert p["forward"].startswith("ligerd." if flce else "transformers."), ctx
        # What ran: every norm, RoPE and MLP of every step, forward and backward, in the model's dtype.
        want = {"rms_norm_fwd", "rms_norm_bwd", "rope_fwd", "rope_bwd"} | (
            {"swiglu_fwd", "swiglu_bwd"} if swiglu else set()) | (FLCE_OPS if flce else {"cross_entropy_fwd"})
        assert want <= ops, (ctx, want - ops)
        if not swiglu:
            assert not ops & {"swiglu_fwd", "swiglu_bwd"}, ctx
        if not flce:
            assert "gemm" not in ops, ctx
        for op, n in (("rms_norm_fwd", p["norms"]), ("rms_norm_bwd", p["norms"]), ("rope_fwd", layers),
                      ("rope_bwd", layers)) + ((("swiglu_fwd", layers), ("swiglu_bwd", layers)) if swiglu else ()):
            assert x["ops"][op]["n"] == n * steps and x["ops"][op]["dtypes"] == [dtype], (ctx, op)
        # Against the plain run of the same arch and dtype.
        plain = r["runs"][f"{arch}_{'f32' if dtype == 'float32' else 'bf16'}_plain"]
        tol_loss, tol_gn, tol_g0 = (1e-3, 1e-2, 3e-4) if dtype == "float32" else (3e-2, 5e-2, 8e-2)
        assert x["grads_compared"] == x["params"] > 0, ctx      # every parameter had a gradient
        worst = max(x["grad0_rel"], key=x["grad0_rel"].get)
        assert x["grad0_rel"][worst] <= tol_g0, (name, worst, x["grad0_rel"])
        for a, b in zip(plain["loss"], loss):
            assert abs(a - b) <= tol_loss, (ctx, plain["loss"])
        for a, b in zip(plain["grad_norm"], x["grad_norm"]):
            assert _rel(b, a) <= tol_gn, (ctx, plain["grad_norm"])


def check_trl(r: dict, device: str, steps: int = 2) -> None:
    """TRL_SCRIPT's result (TRL 1.12.0): SFTTrainer with use_liger_kernel=True trains through
    ligerd's patched layers and fused linear CE (TRL asks it for token accuracy: it is returned);
    DPOTrainer's loss is ligerd's chunked DPO loss, once per step, with the layers ligerd's too;
    all on `device`, finite, and following TRL's own path (use_liger_kernel=False).

    TRL's configs default to bf16=True (autocast around the model's forward). DPO's plain path runs
    under it; its Liger path calls the backbone and the chunked loss outside that forward, in float32.

    Tolerances: measured on the CPU (ligerd's ops in float64), SFT (TRL's default bf16 autocast)
    agrees with TRL's own path to 2e-3 in the losses, 3% in the grad norms after a step (bf16
    logits); DPO to 5e-4 in the second loss and 1e-4 (step 0) / 0.5% (step 1) in grad norms (AdamW's
    first step moves near-zero gradients by a whole lr whatever their rounding). Bounds: SFT 2e-2 and
    10%; DPO: step 0 is ln 2 within 1e-4 (policy == reference), step 1 within 5e-3 of TRL's own, its
    grad norms within 2% (step 0) and 10%."""
    assert r["trl"] == TRL_VERSION and r["shim_dpo_is_ligerd"], r
    runs = r["runs"]
    for name in ("sft_plain", "dpo_plain"):
        x = runs[name]
        assert _ops_on(x, device, name) == set() and x["patched"]["norms_ligerd"] == 0, (name, x)
    for name in ("sft_liger", "dpo_liger"):
        x, ctx = runs[name], (name, runs[name])
        p = x["patched"]
        assert len(x["loss"]) == steps and all(math.isfinite(v) for v in x["loss"]), ctx
        assert p["norms"] == p["norms_ligerd"] == 5 and p["mlps_ligerd"] == 2, ctx
        assert p["rope"] == "ligerd.transformers.rope.liger_rotary_pos_emb", ctx
        assert LAYER_OPS <= _ops_on(x, device, ctx), ctx
    sft, sft0 = runs["sft_liger"], runs["sft_plain"]
    assert sft["patched"]["forward"].startswith("ligerd."), sft      # the fused linear CE forward
    assert FLCE_OPS <= set(sft["ops"]), sft
    assert all(a is not None and 0.0 <= a <= 1.0 for a in sft["token_accuracy"]), sft
    for a, b in zip(sft0["loss"], sft["loss"]):
        assert abs(a - b) <= 2e-2, (sft0["loss"], sft["loss"])
    for a, b in zip(sft0["grad_norm"], sft["grad_norm"]):
        assert _rel(b, a) <= 0.1, (sft0["grad_norm"], sft["grad_norm"])
    dpo, dpo0 = runs["dpo_liger"], runs["dpo_plain"]
    assert dpo["dpo_calls"] == steps and runs["dpo_plain"]["dpo_calls"] == 0, dpo
    assert dpo["loss_module"] == "ligerd.chunked_loss.preference.LigerFusedLinearDPOLoss", dpo
    assert FLCE_OPS & set(dpo["ops"]), dpo        # the chunked loss's GEMMs / CE ran through ligerd
    assert abs(dpo["loss"][0] - LN2) <= 1e-4 and abs(dpo["loss"][1] - LN2) > 1e-3, dpo
    assert abs(dpo["loss"][1] - dpo0["loss"][1]) <= 5e-3, (dpo0["loss"], dpo["loss"])
    assert _rel(dpo["grad_norm"][0], dpo0["grad_norm"][0]) <= 2e-2, (dpo0["grad_norm"], dpo["grad_norm"])
    assert _rel(dpo["grad_norm"][1], dpo0["grad_norm"][1]) <= 0.1, (dpo0["grad_norm"], dpo["grad_norm"])
