#!/usr/bin/env python3
"""The main job: train a small LLaMA from scratch on real text, with and without ligerd, side by side.

What it does
  1. Text: the Python reference manual that ships inside every CPython (the standard library's
     ``pydoc_data/topics.py``: ~80 chapters of English, ~0.5 MB in 3.11, ~0.8 MB in 3.12), so
     nothing is downloaded at run time. ``--text FILE`` trains on any UTF-8 file instead.
  2. Tokenizer: a byte-level BPE (vocabulary ``--vocab``, default 8192) trained on that text at
     startup with the ``tokenizers`` package (a dependency of transformers), cached under
     ``<out>/cache``; ``--tokenizer byte`` uses raw bytes (vocabulary 256) instead.
  3. Model: ``transformers.LlamaForCausalLM`` from a ``LlamaConfig`` (``--model-size``; default
     "small": hidden 1024, 8 layers, 16 query / 4 key-value heads, FFN 2816, ~100M parameters),
     random initialisation, SDPA attention, **bf16 weights** (and so bf16 gradients and AdamW
     states), as Liger-Kernel's and our end-to-end benchmarks train.
  4. Training: the same run twice, each in its own process (so peak memory is each run's own):
     "HF eager" (transformers as it is) and "ligerd" (``ligerd.transformers.
     apply_liger_kernel_to_llama()`` before the model is built: RoPE, RMSNorm, SwiGLU and the
     fused linear cross-entropy, which never materialises the logits). Same seed, same initial
     weights, same batches (random windows of ``--seq`` tokens, seeded), AdamW (lr 6e-4,
     betas 0.9/0.95, weight decay 0.1, warm-up then cosine), gradient clipping at 1.0.
  5. Report: a progress bar per run; then a table with tokens/s (after ``--warmup`` steps),
     peak GPU memory (torch.cuda.max_memory_allocated), final loss and the largest per-step
     |loss difference|; ``<out>/losses.csv``, ``<out>/results.json`` and ``<out>/train_llama.png``
     (loss curves and a memory bar chart; needs matplotlib).

The ligerd client starts a private ligerd daemon when none is running (``LIGERD_BIN`` or PATH);
``--dispatch`` sets ``LIGERD_DISPATCH`` (auto: remote when MPS is active, else local).

    PYTHONPATH=build/release/python LIGERD_BIN=build/release/server/ligerd \\
        python3 examples/train_llama.py                  # ~1-2 minutes on an H100
    python3 examples/train_llama.py --only hf --steps 50 --model-size tiny

Exit status: 0 when every requested run finished, 1 when one failed, 2 when there is no CUDA GPU
(or no PyTorch) to run on.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

# Model sizes: (hidden, layers, query heads, key-value heads, FFN). "small" is the demo's default:
# about a minute per run on an H100 at the default steps, batch and sequence length.
SIZES: Dict[str, Dict[str, int]] = {
    "tiny": dict(hidden=256, layers=2, heads=4, kv_heads=2, ffn=704),
    "small": dict(hidden=1024, layers=8, heads=16, kv_heads=4, ffn=2816),
    "medium": dict(hidden=1536, layers=12, heads=24, kv_heads=8, ffn=4096),
    # The Llama-3.2-1B body (its vocabulary is 128256; here the vocabulary is the tokenizer's).
    "1b": dict(hidden=2048, layers=16, heads=32, kv_heads=8, ffn=8192),
}

RUNS = {"hf": "HF eager", "ligerd": "ligerd"}
# What the "ligerd" run calls before building the model ("module:function", no arguments, so
# Liger's defaults: rope, rms_norm, swiglu, fused_linear_cross_entropy). Tests inject a fake.
LIGERD_PATCH = "ligerd.transformers:apply_liger_kernel_to_llama"
EOS = "<|endoftext|>"
NO_GPU_EXIT = 2


# ---------------------------------------------------------------------------------------------
# Command line

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="train_llama.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150, help="optimizer steps per run (default 150)")
    ap.add_argument("--batch", type=int, default=8, help="sequences per step (default 8)")
    ap.add_argument("--seq", type=int, default=1024, help="tokens per sequence (default 1024)")
    ap.add_argument("--model-size", choices=sorted(SIZES), default="small",
                    help="LLaMA shape (default small: hidden 1024, 8 layers, 16/4 heads, FFN 2816)")
    ap.add_argument("--dispatch", choices=("auto", "local", "remote"), default="auto",
                    help="ligerd dispatch mode for the ligerd run (LIGERD_DISPATCH; default auto)")
    ap.add_argument("--only", choices=("hf", "ligerd", "both"), default="both",
                    help="which runs (default both: HF eager, then ligerd)")
    ap.add_argument("--out", default=os.path.join("out", "train_llama"),
                    help="output folder (default out/train_llama)")
    ap.add_argument("--lr", type=float, default=6e-4, help="peak learning rate (default 6e-4)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="steps left out of tokens/s (default: min(10, steps // 5))")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer", choices=("bpe", "byte"), default="bpe",
                    help="bpe: byte-level BPE trained on the text (cached); byte: raw bytes")
    ap.add_argument("--vocab", type=int, default=8192, help="BPE vocabulary size (default 8192)")
    ap.add_argument("--text", default=None,
                    help="train on this UTF-8 file instead of the Python reference manual")
    ap.add_argument("--no-plot", action="store_true", help="skip the PNG")
    # Internal: the parent runs each training in a child process; tests pick the CPU and a fake patch.
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help=argparse.SUPPRESS)
    ap.add_argument("--ligerd-patch", default=LIGERD_PATCH, help=argparse.SUPPRESS)
    ap.add_argument("--worker", choices=sorted(RUNS), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tokens-file", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for name in ("steps", "batch", "seq", "vocab"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1")
    if args.tokenizer == "bpe" and args.vocab < 257:
        ap.error("--vocab must be above 256 (the byte alphabet) for the BPE tokenizer")
    if args.warmup is None:
        args.warmup = min(10, args.steps // 5)
    if not 0 <= args.warmup < args.steps:
        ap.error("--warmup must be at least 0 and below --steps")
    return args


def runs_for(only: str) -> List[str]:
    return ["hf", "ligerd"] if only == "both" else [only]


# ---------------------------------------------------------------------------------------------
# Text and tokenizer (no download: the text ships with Python, the BPE is trained here)

def load_documents(path: Optional[str] = None) -> "tuple[List[str], str]":
    """(documents, where they came from). Default: the chapters of the Python reference manual
    in the standard library's pydoc_data.topics, in a fixed (sorted) order."""
    if path:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        docs = [d for d in text.split("\n\n\n") if d.strip()]
        return docs, f"{path} ({len(text):,} characters)"
    import pydoc_data.topics as topics
    docs = [topics.topics[k] for k in sorted(topics.topics)]
    n = sum(len(d) for d in docs)
    return docs, (f"the Python {sys.version_info.major}.{sys.version_info.minor} reference manual "
                  f"(pydoc_data/topics.py, {len(docs)} chapters, {n:,} characters)")


class ByteTokenizer:
    """Raw UTF-8 bytes; 256 is the end-of-document token."""
    name = "byte"

    def __init__(self):
        self.eos_id = 256
        self.vocab_size = 257

    def encode(self, text: str) -> List[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class BPETokenizer:
    """A byte-level BPE (GPT-2 style pre-tokenisation) from the ``tokenizers`` package."""
    name = "bpe"

    def __init__(self, tok):
        self.tok = tok
        self.eos_id = tok.token_to_id(EOS)
        self.vocab_size = tok.get_vocab_size()

    def encode(self, text: str) -> List[int]:
        return self.tok.encode(text).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids))

    @classmethod
    def train(cls, docs: Sequence[str], vocab_size: int, cache_dir: Optional[Path] = None):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        key = hashlib.sha256("\x00".join(docs).encode("utf-8")).hexdigest()[:16]
        cached = Path(cache_dir) / f"bpe-{key}-{vocab_size}.json" if cache_dir else None
        if cached is not None and cached.exists():
            return cls(Tokenizer.from_file(str(cached)))
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(docs, trainer=trainer)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".tmp{os.getpid()}")
            tok.save(str(tmp))
            os.replace(tmp, cached)
        return cls(tok)


def make_tokenizer(kind: str, docs: Sequence[str], vocab: int, cache_dir: Optional[Path] = None):
    if kind == "byte":
        return ByteTokenizer()
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        print("train_llama: the `tokenizers` package is not installed; using the byte tokenizer",
              file=sys.stderr)
        return ByteTokenizer()
    return BPETokenizer.train(docs, vocab, cache_dir)


def encode_documents(tok, docs: Sequence[str]) -> List[int]:
    """One token stream: each document followed by the end-of-document token."""
    ids: List[int] = []
    for d in docs:
        ids.extend(tok.encode(d))
        ids.append(tok.eos_id)
    return ids


def padded_vocab(n: int, multiple: int = 128) -> int:
    """Embedding rows: the tokenizer's vocabulary rounded up to a multiple of 128 (GEMM-friendly
    shapes, as real checkpoints do; the extra rows are never a target)."""
    return -(-n // multiple) * multiple


def batch_starts(n_tokens: int, seq: int, batch: int, steps: int, seed: int):
    """Start offsets of every step's windows: a (steps, batch) LongTensor, random but fixed by the
    seed, so every run sees the same data in the same order."""
    import torch
    if n_tokens < seq + 1:
        raise ValueError(f"the text has {n_tokens} tokens, fewer than one sequence of {seq}: "
                         f"use a smaller --seq or a larger --text")
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_tokens - seq + 1, (steps, batch), generator=g)


def window_batch(tokens, starts, seq: int):
    """(batch, seq) input ids from the windows at ``starts``; the labels are the same ids
    (transformers shifts them)."""
    import torch
    return torch.stack([tokens[s: s + seq] for s in starts.tolist()])


# ---------------------------------------------------------------------------------------------
# Model, optimizer, one training run (what a child process does)

def llama_config(dims: Dict[str, int], vocab_size: int, seq: int, tie_word_embeddings: bool = False,
                 rope_theta: float = 10000.0):
    """A LlamaConfig with ``dims`` (a SIZES entry), SDPA attention, no KV cache."""
    from transformers import LlamaConfig
    s = dims
    kw = dict(vocab_size=vocab_size, hidden_size=s["hidden"], intermediate_size=s["ffn"],
              num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
              num_key_value_heads=s["kv_heads"], max_position_embeddings=max(seq, 2048),
              rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=tie_word_embeddings,
              use_cache=False, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    try:  # transformers 5: rope_parameters; 4.x: rope_theta
        cfg = LlamaConfig(**kw, rope_parameters={"rope_type": "default", "rope_theta": rope_theta})
    except TypeError:
        cfg = LlamaConfig(**kw, rope_theta=rope_theta)
    cfg._attn_implementation = "sdpa"
    return cfg


def build_model(config, device: str, dtype, seed: int):
    """LlamaForCausalLM with random weights drawn from ``seed``, built directly in ``dtype`` on
    ``device`` (same weights for every run: the draw does not depend on what is patched)."""
    import torch
    from transformers import LlamaForCausalLM
    torch.manual_seed(seed)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(prev)
    return model.train()


def resolve(spec: str) -> Callable[[], object]:
    """``module:function`` to the function (imported in the child that needs it)."""
    module, _, fn = spec.partition(":")
    return getattr(importlib.import_module(module), fn)


def lr_at(step: int, steps: int, peak: float, warmup_steps: int) -> float:
    """Linear warm-up over ``warmup_steps`` (at least 1), then cosine down to 10% of the peak."""
    w = max(1, warmup_steps)
    if step < w:
        return peak * (step + 1) / w
    t = (step - w) / max(1, steps - w)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


class Progress:
    """tqdm when it is importable, else one line rewritten in place."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.n, self.t0 = total, desc, 0, time.perf_counter()
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, file=sys.stderr)
        except ImportError:
            self.bar = None
        self.post = ""

    def update(self, n: int = 1, **post) -> None:
        self.n += n
        if post:
            self.post = ", ".join(f"{k}={v}" for k, v in post.items())
        if self.bar is not None:
            if post:
                self.bar.set_postfix_str(self.post, refresh=False)
            self.bar.update(n)
            return
        width = 30
        done = int(width * self.n / max(1, self.total))
        rate = self.n / max(1e-9, time.perf_counter() - self.t0)
        sys.stderr.write(f"\r{self.desc}: [{'#' * done}{'.' * (width - done)}] {self.n}/{self.total} "
                         f"{rate:.1f} step/s {self.post}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            sys.stderr.write("\n")


@dataclass
class RunResult:
    run: str
    label: str
    ok: bool
    error: str = ""
    steps: int = 0
    batch: int = 0
    seq: int = 0
    params: int = 0
    tokens_per_s: float = float("nan")
    step_ms: float = float("nan")
    peak_mem_bytes: int = 0
    losses: Optional[List[float]] = None
    dispatch: str = ""
    device: str = ""


def train_run(run: str, tokens, vocab_size: int, args: argparse.Namespace,
              patch: Optional[Callable[[], object]] = None, progress: bool = True) -> RunResult:
    """One training run in this process. ``patch`` (e.g. ligerd's apply_liger_kernel_to_llama) is
    called before the model is built, so the patched classes and forward are the ones used."""
    import torch
    device = args.device
    if patch is not None:
        patch()
    config = llama_config(SIZES[args.model_size], vocab_size, args.seq)
    # bf16 on the GPU (the demo's subject); float32 on the CPU (tests only: bf16 matmuls are
    # emulated there and ~10x slower).
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = build_model(config, device, dtype, args.seed)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1,
                            eps=1e-8, **({"fused": True} if device == "cuda" else {}))
    starts = batch_starts(len(tokens), args.seq, args.batch, args.steps, args.seed + 1)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    losses = []
    bar = Progress(args.steps, RUNS[run]) if progress else None
    t_start = None
    for step in range(args.steps):
        if step == args.warmup:
            sync()
            t_start = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, max(1, args.steps // 20))
        ids = window_batch(tokens, starts[step], args.seq).to(device, non_blocking=True)
        out = model(input_ids=ids, labels=ids, use_cache=False)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.detach())
        del out
        if bar is not None:
            if step % 10 == 9 or step == args.steps - 1:  # .item() waits for the GPU: not every step
                bar.update(1, loss=f"{losses[-1].item():.3f}")
            else:
                bar.update(1)
    sync()
    elapsed = time.perf_counter() - t_start
    if bar is not None:
        bar.close()
    timed = args.steps - args.warmup
    dispatch = describe_dispatch() if run == "ligerd" else ""
    return RunResult(
        run=run, label=RUNS[run], ok=True, steps=args.steps, batch=args.batch, seq=args.seq,
        params=params, tokens_per_s=timed * args.batch * args.seq / elapsed,
        step_ms=elapsed / timed * 1e3,
        peak_mem_bytes=int(torch.cuda.max_memory_allocated()) if device == "cuda" else 0,
        losses=[float(x) for x in torch.stack(losses).float().cpu().tolist()],
        dispatch=dispatch, device=torch.cuda.get_device_name(0) if device == "cuda" else "cpu")


def describe_dispatch() -> str:
    """How ligerd dispatched the ops in this process (mode and why, per device), for the report."""
    try:
        import ligerd
        info = ligerd.dispatch_info()
    except Exception as e:  # noqa: BLE001 (a stand-in patch in tests, or no ligerd)
        return f"unknown ({type(e).__name__}: {e})"[:200]
    if not isinstance(info, dict):
        return str(info)
    text = f"{info.get('mode')} (requested {info.get('requested')}: {info.get('reason')})"
    for dev, d in (info.get("devices") or {}).items():
        text += f"; device {dev}: {d.get('mode')} ({d.get('reason')})"
    if info.get("daemon"):
        text += f"; {info['daemon']}"
    return text


def worker_main(args: argparse.Namespace) -> int:
    """The child process: load the token stream, train, write the result JSON."""
    import torch
    data = torch.load(args.tokens_file)
    try:
        if args.worker == "ligerd" and args.device == "cpu" and args.ligerd_patch.startswith("ligerd."):
            # No GPU: ligerd's ops run on its float64 reference executor (the CPU test suite's
            # stand-in for the CUDA kernels), so the run shows the patched model training, not speed.
            from ligerd import _backend
            from ligerd.testing import ref_executor
            _backend._test_launcher = ref_executor.RefLauncher(describe=lambda t: None)
        patch = resolve(args.ligerd_patch) if args.worker == "ligerd" else None
        res = train_run(args.worker, data["tokens"], int(data["vocab_size"]), args, patch)
    except Exception as e:  # noqa: BLE001: reported by the parent beside the other run
        import traceback
        traceback.print_exc()
        res = RunResult(run=args.worker, label=RUNS[args.worker], ok=False,
                        error=f"{type(e).__name__}: {e}")
    Path(args.result).write_text(json.dumps(asdict(res)))
    return 0 if res.ok else 1


# ---------------------------------------------------------------------------------------------
# The parent: data once, each run in a child, then the report

def gpu_problem(device: str) -> Optional[str]:
    """Why this machine cannot run the demo on ``device``, or None."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed (pip install torch), and the demo trains with it on a CUDA GPU"
    if device == "cuda" and not torch.cuda.is_available():
        return ("no CUDA GPU is visible to PyTorch on this machine "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); "
                "this demo trains on a GPU and compares GPU throughput and memory")
    try:
        import transformers  # noqa: F401
    except ImportError:
        return "the `transformers` package is not installed (pip install transformers)"
    return None


def child_command(run: str, args: argparse.Namespace, tokens_file: Path, result: Path) -> List[str]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", run,
           "--tokens-file", str(tokens_file), "--result", str(result),
           "--steps", str(args.steps), "--batch", str(args.batch), "--seq", str(args.seq),
           "--model-size", args.model_size, "--lr", repr(args.lr), "--warmup", str(args.warmup),
           "--seed", str(args.seed), "--device", args.device, "--ligerd-patch", args.ligerd_patch]
    return cmd


def run_child(run: str, args: argparse.Namespace, tokens_file: Path, out: Path) -> RunResult:
    result = out / f"result_{run}.json"
    result.unlink(missing_ok=True)
    env = dict(os.environ)
    if run == "ligerd":
        env["LIGERD_DISPATCH"] = args.dispatch
    print(f"\n== {RUNS[run]}: {args.steps} steps of {args.batch} x {args.seq} tokens", flush=True)
    proc = subprocess.run(child_command(run, args, tokens_file, result), env=env)
    if result.exists():
        return RunResult(**json.loads(result.read_text()))
    return RunResult(run=run, label=RUNS[run], ok=False,
                     error=f"the run's process exited with status {proc.returncode} and wrote no result")


def max_loss_diff(a: Sequence[float], b: Sequence[float]) -> "tuple[float, int]":
    """(max |a_i - b_i|, its step index, 1-based) over the steps both have."""
    best, at = 0.0, 0
    for i, (x, y) in enumerate(zip(a, b)):
        d = abs(x - y)
        if d > best or (math.isnan(d) and not math.isnan(best)):
            best, at = d, i + 1
    return best, at


def final_loss(losses: Sequence[float], last: int = 10) -> float:
    """Mean of the last ``last`` steps' losses (one step is noisy)."""
    tail = list(losses)[-last:]
    return sum(tail) / len(tail) if tail else float("nan")


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def report_table(results: Sequence[RunResult]) -> str:
    """The side-by-side table (one column per run, a ratio column when both ran)."""
    ok = {r.run: r for r in results}
    cols = [r.label for r in results]
    both = "hf" in ok and "ligerd" in ok and ok["hf"].ok and ok["ligerd"].ok
    header = ["", *cols] + (["ligerd / HF"] if both else [])
    rows: List[List[str]] = []

    def row(name, fmt, ratio=None):
        cells = [fmt(r) if r.ok else "failed" for r in results]
        rows.append([name, *cells] + ([ratio] if both else []))

    row("tokens/s", lambda r: f"{r.tokens_per_s:,.0f}",
        f"{ok['ligerd'].tokens_per_s / ok['hf'].tokens_per_s:.2f}x" if both else None)
    row("ms/step", lambda r: f"{r.step_ms:.1f}",
        f"{ok['ligerd'].step_ms / ok['hf'].step_ms:.2f}x" if both else None)
    if any(r.peak_mem_bytes for r in results if r.ok):
        row("peak GPU memory", lambda r: gib(r.peak_mem_bytes),
            f"{ok['ligerd'].peak_mem_bytes / max(1, ok['hf'].peak_mem_bytes):.2f}x" if both else None)
    row("first loss", lambda r: f"{r.losses[0]:.4f}",
        f"{ok['ligerd'].losses[0] - ok['hf'].losses[0]:+.4f}" if both else None)
    row("final loss (mean of last 10)", lambda r: f"{final_loss(r.losses):.4f}",
        f"{final_loss(ok['ligerd'].losses) - final_loss(ok['hf'].losses):+.4f}" if both else None)
    if both:
        d, at = max_loss_diff(ok["hf"].losses, ok["ligerd"].losses)
        where = f"{d:.4f} at step {at}" if at else "0 (equal at every step)"
        rows.append(["max |loss difference|", where, "", ""])
    widths = [max(len(x[i]) for x in [header] + rows) for i in range(len(header))]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    lines = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    for r in results:
        if not r.ok:
            lines.append(f"{r.label} failed: {r.error}")
        elif r.dispatch:
            lines.append(f"{r.label} dispatch: {r.dispatch}")
    return "\n".join(lines)


def write_outputs(results: Sequence[RunResult], out: Path, meta: Dict[str, object],
                  plot: bool = True) -> List[Path]:
    """losses.csv (step, one column per run), results.json (everything), train_llama.png."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    done = [r for r in results if r.ok]
    n = max((len(r.losses) for r in done), default=0)
    with open(out / "losses.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step"] + [r.run for r in done])
        for i in range(n):
            w.writerow([i + 1] + [f"{r.losses[i]:.6f}" if i < len(r.losses) else "" for r in done])
    written.append(out / "losses.csv")
    summary = {"meta": meta, "runs": [asdict(r) for r in results]}
    if len(done) == 2:
        d, at = max_loss_diff(done[0].losses, done[1].losses)
        summary["max_abs_loss_diff"] = {"value": d, "step": at}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    written.append(out / "results.json")
    if plot and done:
        png = plot_results(done, out / "train_llama.png", meta)
        if png is not None:
            written.append(png)
    return written


def plot_results(results: Sequence[RunResult], path: Path, meta: Dict[str, object]) -> Optional[Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("train_llama: matplotlib is not installed: no PNG (the CSV and JSON have the numbers)",
              file=sys.stderr)
        return None
    colors = {"hf": "tab:blue", "ligerd": "tab:orange"}
    both = len(results) == 2
    fig, axes = plt.subplots(1, 3 if both else 2, figsize=(15 if both else 12, 4.8),
                             gridspec_kw={"width_ratios": [3, 2, 1.3] if both else [3, 1.3]})
    ax1, ax_mem = axes[0], axes[-1]
    for r in results:
        ax1.plot(range(1, len(r.losses) + 1), r.losses, label=r.label, color=colors.get(r.run),
                 linewidth=1.2, alpha=0.85)
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss")
    ax1.set_title("training loss")
    ax1.grid(alpha=0.3)
    ax1.legend()
    if both:
        a, b = results[0], results[1]
        diff = [y - x for x, y in zip(a.losses, b.losses)]
        ax2 = axes[1]
        ax2.plot(range(1, len(diff) + 1), diff, color="tab:gray", linewidth=1.0)
        ax2.axhline(0.0, color="black", linewidth=0.6)
        ax2.set_xlabel("step")
        ax2.set_title(f"loss difference ({b.label} - {a.label})")
        ax2.grid(alpha=0.3)
    mem = [r.peak_mem_bytes / 2**30 for r in results]
    bars = ax_mem.bar([r.label for r in results], mem, color=[colors.get(r.run) for r in results])
    for bar, r in zip(bars, results):
        ax_mem.text(bar.get_x() + bar.get_width() / 2, bar.get_height(),
                    f"{r.peak_mem_bytes / 2**30:.2f} GiB\n{r.tokens_per_s:,.0f} tok/s",
                    ha="center", va="bottom", fontsize=8)
    ax_mem.set_ylabel("GiB")
    ax_mem.set_title("peak GPU memory")
    ax_mem.set_ylim(0, max(mem + [1e-3]) * 1.3)
    fig.suptitle(str(meta.get("title", "")), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def prepare_tokens(args: argparse.Namespace, out: Path) -> "tuple[Path, Dict[str, object]]":
    """Tokenise the text once (cached), save the stream for the children; returns (file, facts)."""
    import torch
    docs, source = load_documents(args.text)
    cache = out / "cache"
    t0 = time.perf_counter()
    tok = make_tokenizer(args.tokenizer, docs, args.vocab, cache)
    ids = encode_documents(tok, docs)
    tokens = torch.tensor(ids, dtype=torch.int64)
    vocab_size = padded_vocab(tok.vocab_size)
    key = hashlib.sha256(tokens.numpy().tobytes()).hexdigest()[:16]
    path = cache / f"tokens-{tok.name}-{key}.pt"
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({"tokens": tokens, "vocab_size": vocab_size}, path)
    facts = {"text": source, "tokenizer": f"{tok.name} (vocabulary {tok.vocab_size}, "
             f"embedding rows {vocab_size})", "tokens": len(ids),
             "tokenize_s": round(time.perf_counter() - t0, 2)}
    return path, facts


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    problem = gpu_problem(args.device)
    if problem:
        print(f"train_llama: cannot run: {problem}.", file=sys.stderr)
        return NO_GPU_EXIT
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tokens_file, facts = prepare_tokens(args, out)
    s = SIZES[args.model_size]
    model_desc = (f"LLaMA {args.model_size} (hidden {s['hidden']}, {s['layers']} layers, "
                  f"{s['heads']}/{s['kv_heads']} heads, FFN {s['ffn']})")
    print(f"text: {facts['text']}\ntokenizer: {facts['tokenizer']}; {facts['tokens']:,} tokens "
          f"({facts['tokenize_s']} s)\nmodel: {model_desc}, "
          f"{'bf16' if args.device == 'cuda' else 'float32 (CPU)'} weights, AdamW, random init\n"
          f"training: {args.steps} steps x {args.batch} x {args.seq} tokens "
          f"({args.steps * args.batch * args.seq / max(1, facts['tokens']):.1f} passes over the text), "
          f"tokens/s after {args.warmup} warm-up steps")
    results = [run_child(run, args, tokens_file, out) for run in runs_for(args.only)]
    meta = dict(facts, model=model_desc, steps=args.steps, batch=args.batch, seq=args.seq,
                dispatch=args.dispatch, device=next((r.device for r in results if r.ok), args.device),
                params=next((r.params for r in results if r.ok), 0),
                title=f"{model_desc}, {next((r.params for r in results if r.ok), 0) / 1e6:.0f}M "
                      f"parameters, batch {args.batch} x {args.seq} tokens, "
                      f"{'bf16' if args.device == 'cuda' else 'float32'} weights, AdamW\n"
                      f"text: {facts['text']}; tokenizer: {facts['tokenizer']}")
    print(f"\n== {model_desc}, {meta['params'] / 1e6:.0f}M parameters, on {meta['device']}")
    print(report_table(results))
    for p in write_outputs(results, out, meta, plot=not args.no_plot):
        print(f"wrote {p}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
