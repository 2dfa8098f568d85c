"""What the ligerd.chunked_loss examples share (align_dpo.py, distill_jsd.py, grpo_step.py): the
device and executor set-up, a tiny random LLaMA, peak-memory measurement, and the one-step check
of a fused ligerd loss against the same loss written unfused in torch.

Where things run:
  * cuda: ligerd's real executor (its cuBLASLt GEMMs and NVRTC kernels), in the dispatch mode
    ``--dispatch`` asks for (the client starts a private ligerd daemon when none is running:
    ``LIGERD_BIN`` or PATH, ``PYTHONPATH=build/release/python``).
  * cpu: ligerd's ops take CUDA tensors only. On the CPU the examples install
    ``ligerd.testing.ref_executor.RefLauncher``, the float64 stand-in of every executor op that the
    CPU test suite uses, as ligerd's launcher: the chunked losses' own Python (chunking, groups,
    the loss formulas, the gradient bookkeeping) runs for real, the CUDA kernels do not. That
    shows the examples work and the losses agree with torch; it says nothing about speed or
    memory, so no memory figures are printed there.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# The check's tolerance (as tests/gpu/test_chunked_loss.py judges the same losses): norm-wise
# error against float64 on the same rounded inputs, at most 2x what torch's unfused loss in the
# same dtype achieves (8x for outputs of fewer than 16 numbers: a few roundings each, so one
# can be several times another's by chance), or a floor where torch's error is tiny: fp32 2e-5
# (and 2 eps sqrt(V) for reductions over the vocabulary), bf16/fp16 2^-7 (one half-precision
# rounding of the logits moves a log-prob summed over hundreds of tokens about that much).
FLOOR = {torch.float32: 2e-5, torch.bfloat16: 2.0 ** -7, torch.float16: 2.0 ** -7}

# Tiny LLaMA shapes: (hidden, layers, query heads, key-value heads, FFN).
SIZES: Dict[str, Dict[str, int]] = {
    "tiny": dict(hidden=64, layers=2, heads=4, kv_heads=2, ffn=128),
    "small": dict(hidden=512, layers=4, heads=8, kv_heads=2, ffn=1408),
}


def add_common_args(ap: argparse.ArgumentParser, vocab_cuda: int = 32000) -> None:
    ap.set_defaults(vocab_cuda=vocab_cuda)
    ap.add_argument("--device", choices=("cuda", "cpu"), default=None,
                    help="cuda (ligerd's kernels) or cpu (ligerd's float64 reference executor); "
                         "default cuda when a GPU is visible, else cpu")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps (default 10)")
    ap.add_argument("--size", choices=sorted(SIZES), default=None,
                    help="model shape (default small on cuda, tiny on cpu)")
    ap.add_argument("--vocab", type=int, default=None,
                    help=f"vocabulary (default {vocab_cuda} on cuda, 128 on cpu)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                    help="weights and activations (default bfloat16 on cuda, float32 on cpu)")
    ap.add_argument("--dispatch", choices=("auto", "local", "remote"), default="auto",
                    help="ligerd dispatch mode on cuda (default auto)")
    ap.add_argument("--chunk", type=int, default=None,
                    help="tokens per chunk (LIGERD_CHUNKED_LOSS_CHUNK); default: ligerd's memory budget")
    ap.add_argument("--lr", type=float, default=None, help="AdamW learning rate")
    ap.add_argument("--seed", type=int, default=0)


def finish_args(args: argparse.Namespace, ap: argparse.ArgumentParser) -> argparse.Namespace:
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA GPU is visible to PyTorch")
    on_cuda = args.device == "cuda"
    args.size = args.size or ("small" if on_cuda else "tiny")
    args.vocab = args.vocab or (args.vocab_cuda if on_cuda else 128)
    args.dtype = DTYPES[args.dtype or ("bfloat16" if on_cuda else "float32")]
    if args.steps < 1:
        ap.error("--steps must be at least 1")
    if args.vocab < 8:
        ap.error("--vocab must be at least 8")
    if args.chunk is not None and args.chunk < 1:
        ap.error("--chunk must be at least 1")
    return args


def setup(args) -> str:
    """Points ligerd at the executor for args.device; returns a line saying what runs where."""
    if args.chunk is not None:
        os.environ["LIGERD_CHUNKED_LOSS_CHUNK"] = str(args.chunk)
    import ligerd
    torch.manual_seed(args.seed)
    if args.device == "cpu":
        from ligerd import _backend
        from ligerd.testing import ref_executor
        # The CPU test suite's stand-in executor (see the module docstring); records nothing.
        _backend._test_launcher = ref_executor.RefLauncher(describe=lambda t: None)
        return (f"ligerd {ligerd.__version__} on the CPU: ligerd's chunked losses with its float64 "
                f"reference executor (ligerd.testing.ref_executor), not its CUDA kernels; no memory figures")
    if args.dispatch != "auto":
        ligerd.set_dispatch_mode(args.dispatch)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 runs are judged against float64
    return f"ligerd {ligerd.__version__} on {torch.cuda.get_device_name(0)}"


def dispatch_line(args) -> str:
    if args.device == "cpu":
        return "dispatch: reference executor (CPU)"
    import ligerd
    info = ligerd.dispatch_info()
    dev = info.get("devices", {}).get(torch.cuda.current_device())
    mode = dev["mode"] if dev else info.get("mode")
    return f"dispatch: {mode}"


def tiny_llama(size: str, vocab: int, dtype, device: str, seed: int, scale: int = 1):
    """A random-init transformers LlamaForCausalLM of SIZES[size] (untied LM head, eager attention
    on the CPU, SDPA on the GPU); ``scale`` multiplies the width (hidden, heads, FFN)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    d = SIZES[size]
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=d["hidden"] * scale, intermediate_size=d["ffn"] * scale,
                      num_hidden_layers=d["layers"], num_attention_heads=d["heads"] * scale,
                      num_key_value_heads=d["kv_heads"], max_position_embeddings=4096,
                      tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                      attn_implementation="sdpa" if device == "cuda" else "eager")
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).to(device=device, dtype=dtype)


def last_hidden(model, input_ids, attention_mask):
    """The decoder's last hidden states (after the final norm), the LM head's input: what TRL's
    use_liger_loss path hands the fused loss instead of the logits."""
    return model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                               use_cache=False).last_hidden_state


def peak_mib(fn: Callable[[], None], device: str) -> Optional[float]:
    """fn()'s peak CUDA memory beyond what was allocated before it, in MiB (None on the CPU)."""
    if device != "cuda":
        fn()
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def flat(r) -> List[torch.Tensor]:
    """The tensors of a nested (loss, (aux, ...)) result, in order."""
    if isinstance(r, torch.Tensor):
        return [r]
    out = []
    for e in r:
        if e is not None:
            out += flat(e)
    return out


def rel_err(got, ref) -> float:
    ref = ref.double()
    return float((got.double() - ref).norm() / ref.norm().clamp_min(1e-300))


def allowed(err_torch: float, numel: int, dtype, vocab: int) -> float:
    floor = FLOOR[dtype]
    if dtype == torch.float32:
        floor = max(floor, 2 * 2.0 ** -24 * vocab ** 0.5)
    return max((2 if numel >= 16 else 8) * err_torch, floor)


def _evaluate(fn, leaves_in: Sequence[torch.Tensor], dtype, device):
    """fn(*leaves) with fresh leaves in dtype (the floating ones require grad); backward of the
    first output. Returns (outputs, grads, peak MiB)."""
    leaves = [t.detach().to(dtype).clone().requires_grad_(True) if t.is_floating_point() else t
              for t in leaves_in]
    box = {}

    def step():
        out = flat(fn(*leaves))
        out[0].backward()
        box["out"] = [o.detach() for o in out]

    mib = peak_mib(step, device)
    grads = [t.grad for t in leaves if t.is_floating_point()]
    return box["out"], grads, mib


def check_one_step(name: str, fused, unfused, inputs: Sequence[torch.Tensor], labels: Sequence[str],
                   dtype, device: str, vocab: int, out_names: Sequence[str] = (), out=print) -> bool:
    """Runs the fused ligerd loss and the unfused torch loss once on the same inputs (the same
    leaves: e.g. last hidden states and LM head weights, detached), in the training dtype, and the
    unfused one in float64 on the same rounded inputs; compares every output and every gradient
    norm-wise (see FLOOR). Prints one line per quantity and the two peaks; returns True when all
    agree."""
    rounded = [t.detach().to(dtype) if t.is_floating_point() else t for t in inputs]
    got, ggot, mib_fused = _evaluate(fused, rounded, dtype, device)
    base, gbase, mib_torch = _evaluate(unfused, rounded, dtype, device)
    want, gwant, _ = _evaluate(unfused, rounded, torch.float64, device)
    if len(got) != len(want):
        out(f"  {name}: ligerd returned {len(got)} tensors, the torch loss {len(want)}")
        return False
    names = list(out_names) + [f"output {i}" for i in range(len(out_names), len(got))]
    rows = [(names[i], a, b, c) for i, (a, b, c) in enumerate(zip(got, base, want))]
    rows += [(f"d {lab}", a, b, c) for lab, a, b, c in zip(labels, ggot, gbase, gwant)]
    ok = True
    out(f"  one-step check vs the unfused torch loss ({dtype}): value (ligerd vs torch), then each one's "
        f"error norm-wise vs float64 and the limit:")
    for lab, a, b, c in rows:
        if c is None or a is None:
            if (a is None) != (c is None):
                out(f"    {lab:<24} missing on one side"); ok = False
            continue
        e, eb = rel_err(a, c), rel_err(b, c)
        lim = allowed(eb, c.numel(), dtype, vocab)
        good = e <= lim and bool(torch.isfinite(a.double()).all())
        ok &= good
        val = f"{a.double().item():+.6f} vs {b.double().item():+.6f}" if a.numel() == 1 else f"{a.numel()} values"
        out(f"    {lab:<24} {val:<28} ligerd {e:.2e}  torch {eb:.2e}  limit {lim:.2e}  "
            f"{'ok' if good else 'TOO FAR'}")
    if mib_fused is not None:
        out(f"  peak memory of the loss step (forward + backward, beyond its inputs): ligerd {mib_fused:.1f} MiB, "
            f"unfused torch {mib_torch:.1f} MiB ({mib_torch / max(mib_fused, 1e-9):.1f}x)")
    else:
        out("  peak memory: not measured on the CPU")
    return ok


def import_ligerd_or_exit():
    try:
        import ligerd  # noqa: F401
    except ImportError as e:
        print(f"cannot import ligerd ({e}): put the package on PYTHONPATH (build/release/python after a "
              f"build, or python_client for the CPU path)", file=sys.stderr)
        sys.exit(2)
