"""TRL's own GRPOTrainer reaching ligerd's chunked GRPO loss through the compatibility shim
(python_client/compat, docs/compat.md): what tests/python/test_trl_grpo_route.py (CPU, reference
executor) and tests/gpu/test_trl_grpo_route.py (CUDA) share.

Which TRL: the last release whose GRPOTrainer calls Liger's fused linear GRPO loss is TRL 1.12.0
(``from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss`` in trl/trainer/grpo_trainer.py,
used by ``compute_liger_loss`` when ``use_liger_kernel=True``). From 1.13 on, TRL computes the
per-token log-probabilities with its own fused LM head and only takes Liger's layer kernels (what
tests/python/test_trl_route.py covers with TRL 1.16's DPOTrainer). So these tests install TRL
1.12.0's wheel, unchanged, into a scratch --target folder (never into the running environment),
from a wheel folder when one holds it (the GPU machine reaches no registry: .whl/ carried along),
else with `pip download`.

The script trains a tiny Llama for two optimizer steps three times per GRPO loss type asked for,
same seed and data:
  torch32: TRL's own loss path (use_liger_kernel=False), float32 — what users compare against;
  torch64: the same in float64 — the truth the tolerances are measured from;
  liger:   use_liger_kernel=True, float32: TRL's compute_liger_loss calls the shim's
           LigerFusedLinearGRPOLoss (ligerd.chunked_loss's), and HF Trainer patches the model's
           RMSNorm, RoPE and SwiGLU with ligerd's.
It prints one line ``RESULT {json}``: per loss type and run, the logged losses, grad norms, KL, the completions every run generated,
per-parameter update differences, how often ligerd's GRPO loss ran and which ligerd ops ran."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from ligerd.testing.compat_shim import PYTHON_CLIENT, run_result

TRL_VERSION = "1.12.0"

# Wheels a machine with torch, transformers (and so huggingface_hub, safetensors, tokenizers,
# pyyaml, tqdm, filelock, packaging, jinja2, fsspec, httpx) and numpy may lack for TRL 1.12's
# GRPOTrainer on an in-memory datasets.Dataset, as `pip download --no-deps` names them; those
# found in the wheel folder are installed, the rest must be importable already. With transformers
# 5.17's huggingface_hub (>= 1.5) take datasets 4.7.0 (with dill 0.4.0, multiprocess 0.70.18 and
# requests): datasets 5.x imports names that only huggingface_hub >= 1.31 has.
RUN_WHEELS = ("trl", "datasets", "accelerate", "pandas", "pyarrow", "dill", "multiprocess", "xxhash",
              "python_dateutil", "six", "psutil", "requests", "urllib3", "charset_normalizer", "idna",
              "certifi")


def wheelhouse(root: Path | None = None) -> Path | None:
    """$LIGERD_WHEELHOUSE, else .whl/ of the source tree `root` (default: the one this module is
    in; the GPU tests, which import the built ligerd, pass theirs), if it exists."""
    env = os.environ.get("LIGERD_WHEELHOUSE", "").strip()
    p = Path(env) if env else (root or PYTHON_CLIENT.parent) / ".whl"
    return p if p.is_dir() else None


def install_trl(target: Path, scratch: Path, root: Path | None = None) -> tuple[Path | None, str]:
    """TRL 1.12.0 installed with --no-deps into `target`: from the wheel folder when it holds the
    wheel, else downloaded. Returns (target, "") or (None, why not)."""
    house = wheelhouse(root)
    wheels = glob.glob(str(house / f"trl-{TRL_VERSION}-*.whl")) if house else []
    if not wheels:
        p = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(scratch),
                            f"trl=={TRL_VERSION}"], capture_output=True, text=True, timeout=300)
        wheels = glob.glob(str(scratch / f"trl-{TRL_VERSION}-*.whl"))
        if p.returncode != 0 or not wheels:
            return None, (f"trl=={TRL_VERSION}'s wheel is not in {house or '.whl/'} and pip download "
                          f"failed: {(p.stdout + p.stderr).strip()[-300:]}")
    p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                        str(target), wheels[0]], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        return None, f"installing {wheels[0]} failed: {(p.stdout + p.stderr)[-300:]}"
    return target, ""


def install_wheels(names, target: Path, root: Path | None = None) -> list[str]:
    """Installs (--no-deps, --no-index) the wheel folder's wheels of the distributions `names` into
    `target`; returns the names with no wheel there."""
    house = wheelhouse(root)
    found, missing = [], []
    for n in names:
        w = sorted(glob.glob(str(house / f"{n}-*.whl"))) if house else []
        (found.append(w[-1]) if w else missing.append(n))
    if found:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                        str(target), *found], capture_output=True, text=True, timeout=600, check=True)
    return missing


SCRIPT = """
    import os
    os.environ["HF_HUB_OFFLINE"] = "1"     # everything is built in memory or saved locally
    import json, torch
    import trl
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from trl import GRPOConfig, GRPOTrainer
    import liger_kernel.chunked_loss as lk
    import ligerd.chunked_loss as lc
    import ligerd.chunked_loss.grpo as lg
    import ligerd.transformers as lt

    launcher = None
    if DEVICE == "cpu":
        # No GPU: ligerd's ops run through the float64 reference executor (as in the CPU suite).
        from ligerd import _backend
        from ligerd.testing.ref_executor import RefLauncher
        launcher = _backend._test_launcher = RefLauncher()

    # A word-level tokenizer built in memory (no download): 14 words, pad and eos; vocab 16, so that
    # the untrained model samples eos often enough (1/16 a token) for completions of unequal length.
    words = [f"w{i}" for i in range(14)]
    vocab = {"<pad>": 0, "<eos>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")

    g = torch.Generator().manual_seed(SEED)
    def sentence(n):
        return " ".join(words[i] for i in torch.randint(0, len(words), (n,), generator=g).tolist())
    data = Dataset.from_dict({"prompt": [sentence(5) for _ in range(4)]})

    seen = []
    def reward(completions, **kw):
        # Deterministic toy reward: the share of words whose number is a multiple of 3.
        seen.append(list(completions))
        return [sum(int(w[1:]) % 3 == 0 for w in c.split() if w[1:].isdigit()) / max(len(c.split()), 1)
                for c in completions]

    # Count the calls of the chunked GRPO loss that liger_kernel names: through the shim, ligerd's
    # (its Function, so a call that bypassed the module would count too); with a real Liger-Kernel
    # on the path (the parity run), Liger's module.
    calls = [0]
    def counting(f):
        def counted(*a, **k):
            calls[0] += 1
            return f(*a, **k)
        return counted
    if lk.LigerFusedLinearGRPOLoss is lc.LigerFusedLinearGRPOLoss:
        lg.LigerFusedLinearGRPOFunction.apply = staticmethod(counting(lg.LigerFusedLinearGRPOFunction.apply))
    else:
        lk.LigerFusedLinearGRPOLoss.forward = counting(lk.LigerFusedLinearGRPOLoss.forward)

    torch.manual_seed(SEED)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=16, max_position_embeddings=64, pad_token_id=0,
                      eos_token_id=1, bos_token_id=1)
    # GRPOTrainer makes its reference model (beta != 0) from a path: save the initial weights.
    LlamaForCausalLM(cfg).save_pretrained(OUT + "/init")

    def train(name, loss_type):
        liger, dtype = name == "liger", torch.float64 if name == "torch64" else torch.float32
        seen.clear(); calls[0] = 0
        # Plain SGD without clipping: the parameter update is the gradient (Adam's first step is about
        # lr * sign(grad), and clipping would hide a gradient's scale).
        # use_kernels=False: transformers (5.2x, with the `kernels` package installed) loads models
        # with hub kernels on, and model.train() then re-kernelizes, which drops the RMSNorm forward
        # that Liger's (and ligerd's) instance patch put on each norm module.
        args = GRPOConfig(output_dir=OUT, use_liger_kernel=liger, loss_type=loss_type, beta=0.04,
                          max_steps=2, per_device_train_batch_size=4, num_generations=2,
                          steps_per_generation=2, max_completion_length=6, temperature=1.0,
                          learning_rate=0.5, optim="sgd", max_grad_norm=0.0, lr_scheduler_type="constant", report_to=[],
                          use_cpu=DEVICE == "cpu", save_strategy="no", logging_steps=1, disable_tqdm=True,
                          seed=SEED, model_init_kwargs={"dtype": dtype, "use_kernels": False},
                          # LAYERS False: the loss alone (no layer kernels: a real Liger's are Triton)
                          liger_kernel_config=None if LAYERS else {k: False for k in (
                              "rope", "swiglu", "rms_norm", "cross_entropy", "fused_linear_cross_entropy")})
        trainer = GRPOTrainer(model=OUT + "/init", reward_funcs=reward, args=args, train_dataset=data,
                              processing_class=tokenizer)
        init = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        n0 = len(launcher.calls) if launcher else 0
        trainer.train()
        ops = sorted({c[0] for c in launcher.calls[n0:]}) if launcher else []
        hist = [h for h in trainer.state.log_history if "loss" in h and "train_loss" not in h]
        upd = {k: (v.detach() - init[k]).double().cpu() for k, v in trainer.model.state_dict().items()}
        norms = [m for m in trainer.model.modules() if "RMSNorm" in type(m).__name__]
        patched = sum(getattr(m.forward, "__func__", None) is lt.LigerRMSNorm.forward for m in norms)
        loss_cls = type(getattr(trainer, "liger_loss", None))
        # Applying Liger to a Llama also replaces transformers' module-level classes and RoPE
        # function (as Liger does): undo that, or it leaks into the next loss type's plain runs.
        lt.revert_liger_kernel_patches()
        return dict(ops=ops, loss=[h["loss"] for h in hist], grad_norm=[h["grad_norm"] for h in hist],
                    kl=[h.get("kl") for h in hist], completions=[list(s) for s in seen],
                    grpo_calls=calls[0], patched=patched,
                    loss_module=f"{loss_cls.__module__}.{loss_cls.__qualname__}"), upd

    def rel(a, b):
        return {k: ((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-30)).item() for k in a}

    runs = {}
    for loss_type in LOSS_TYPES:
        runs[loss_type], upds = {}, {}
        for name in RUNS:
            runs[loss_type][name], upds[name] = train(name, loss_type)
        # Per parameter: |update - torch64's| / |torch64's update|, for the float32 runs; liger's
        # also against TRL's own float32 path (what a user compares).
        for name in ("torch32", "liger"):
            if name in upds and "torch64" in upds:
                runs[loss_type][name]["update_rel"] = rel(upds[name], upds["torch64"])
        if "liger" in upds and "torch32" in upds:
            runs[loss_type]["liger"]["update_rel_torch32"] = rel(upds["liger"], upds["torch32"])
        if "liger" in upds:   # for comparisons across processes (the shim against a real Liger)
            torch.save(upds["liger"], f"{OUT}/updates_{loss_type}.pt")
    print("RESULT " + json.dumps({"trl": trl.__version__, "trl_file": trl.__file__,
                                  "shim_grpo_is_ligerd": lk.LigerFusedLinearGRPOLoss is lc.LigerFusedLinearGRPOLoss,
                                  "runs": runs}))
"""


def run_grpo(shim_dir: Path, trl_dir: Path, out: Path, *, seed: int, loss_types, device: str,
             runs=("torch32", "torch64", "liger"), layers: bool = True, extra_path=(),
             timeout: float = 600) -> dict:
    """Runs SCRIPT in a fresh interpreter that sees `shim_dir` (the shim, or a real Liger-Kernel's
    --target folder for the parity run), TRL 1.12 and ligerd (on the CPU: the source tree's; on the
    GPU: whatever PYTHONPATH already names, the built package) and returns its RESULT. `runs`: which
    of torch32, torch64, liger; `layers`: whether use_liger_kernel also patches the layers."""
    code = (f"SEED = {seed}\nLOSS_TYPES = {list(loss_types)!r}\nRUNS = {list(runs)!r}\nLAYERS = {layers!r}\n"
            + textwrap.dedent(SCRIPT))
    return run_result(code, out, device=device, path=(shim_dir, trl_dir, *extra_path), timeout=timeout)
