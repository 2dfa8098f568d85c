#!/usr/bin/env python3
"""End-to-end training benchmark (issues 5 and 20): a Llama-3.2-1B-shaped model, HF eager vs HF +
Liger-Kernel vs HF + ligerd (local and remote dispatch), each also under torch.compile: throughput,
peak memory and the largest batch that fits.

Model: ``transformers.LlamaForCausalLM``, vocabulary 128256, hidden 2048, 16 layers, 32 query /
8 key-value heads (head 64), FFN 8192, tied embeddings (as Llama-3.2-1B), rope theta 500000, SDPA
attention, random initialisation, **bf16 weights** (bf16 gradients and AdamW states; fused AdamW,
lr 1e-4), sequence 4096, random token ids (the benchmark measures speed, not learning).

Configurations, each in its own process (peak memory is its own; an out-of-memory error cannot
leave state behind for the next configuration):
  hf             HF eager: transformers as it is
  liger          HF + Liger-Kernel: liger_kernel.transformers.apply_liger_kernel_to_llama() (its
                 defaults: rope, rms_norm, swiglu, fused_linear_cross_entropy), from the wheel
                 installed into $LIGERD_PEER_SITE (bench/ligerd_bench/common.py:add_peer_site())
  ligerd-local   HF + ligerd: ligerd.transformers.apply_liger_kernel_to_llama(), LIGERD_DISPATCH=local
  ligerd-remote  the same with LIGERD_DISPATCH=remote (the daemon runs the kernels): run the whole
                 benchmark under MPS (bash .device/with-mps.sh python3 bench/e2e/run_e2e.py), as
                 remote dispatch is only fast there
  ligerd-sliced  ligerd-local with the fused linear cross-entropy's sliced sweep
                 (LIGERD_FLCE_MODE=sliced: less memory, one more GEMM)
  hf-compile     HF eager with the model wrapped in torch.compile(model) (Inductor, default mode)
  liger-compile  HF + Liger-Kernel, then torch.compile(model)
  ligerd-compile HF + ligerd local, then torch.compile(model)
  ligerd-cudagraph  HF + ligerd local, then torch.compile(model, mode="reduce-overhead") (Inductor
                 with CUDA graphs through cudagraph trees; torch.compiler.cudagraph_mark_step_begin()
                 before every step)

Compiled configurations (CONFIGS[...]["compile"]): the model is patched first, then wrapped; only the
model's forward (and so its backward) is compiled, not the optimizer step. --fullgraph auto (the
default) compiles with fullgraph=True and, when that fails (a graph break), compiles again with
fullgraph=False, and the rows say so ("fullgraph" or "N graph breaks (fullgraph=True failed: ...)");
--fullgraph on/off forces one. Dynamic shapes are torch's default (the first batch compiles a static
graph, the second a graph dynamic in the batch, reused by the later ones). Compilation is excluded
from the timing: a compiled configuration takes at least 2 warm-up steps per batch (3 under
reduce-overhead: cudagraph trees warm up, record, then replay), its first step compiles (or
recompiles for a new batch) and is timed apart: ``first_step_s`` and ``warmup_s`` (all warm-up
steps) per row; the timed steps after them compile nothing (torch._dynamo's counters before and
after are compared: a row whose timed steps compiled says so).

In each process, one model and optimizer; batches are tried in ascending order (the equal batches,
then doubling up to --max-batch): per batch ``--warmup`` steps, then ``--steps`` timed steps
(tokens/s between two synchronisations) and the peak of torch.cuda.max_memory_allocated over them
(weights, gradients and AdamW states included). The first batch that runs out of memory ends that
process; then ``--refine`` bisection steps between the largest batch that fit and the smallest that
did not, each in a fresh process, find the largest batch more exactly.

Outputs under --out (default out/e2e): e2e.csv (one row per configuration and batch), e2e_summary.csv
(per configuration: largest batch, tokens/s there, ratios), e2e.json (everything), e2e.png (tokens/s
and peak memory against batch; needs matplotlib); rows appended to the results file (op "e2e",
pass "train": bench/results.csv, or --results / $LIGERD_RESULTS; bench/ligerd_bench/results.py;
an out-of-memory batch or a failed configuration is a row saying so); and a table with the ratios
beside the targets, against HF eager, HF + Liger-Kernel and HF + torch.compile: throughput >= 1.2x HF
eager (issue 5), >= 1.15x Liger's and >= HF + torch.compile's (issue 20), each at its largest batch;
at equal batch >= 1.2x HF eager and >= Liger's; peak memory at equal batch <= 0.6x HF eager's and
<= Liger's and HF + torch.compile's; largest batch >= 2x HF eager's. The targets judge the ligerd
columns; the best ligerd configuration (with or without compile) is named below the table.

    python3 bench/e2e/run_e2e.py                 # all eight; the eager four take ~5-8 minutes on an H100
    python3 bench/e2e/run_e2e.py --quick --configs hf-compile liger-compile ligerd-compile ligerd-cudagraph
    python3 bench/e2e/run_e2e.py --quick         # fewer steps, equal batch 1 and 2, no refinement
    python3 bench/e2e/run_e2e.py --configs hf ligerd-local --equal-batches 2

Exit status: 0 when every configuration ran (targets missed or not), 1 when one failed (not an
out-of-memory error), 2 without a CUDA GPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _load_demo():
    """examples/train_llama.py (model building shared with the demo), imported by its path."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_llama", ROOT / "examples" / "train_llama.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("train_llama", mod)
    spec.loader.exec_module(mod)
    return mod


train_llama = _load_demo()


def _bench_common():
    """bench/ligerd_bench/common.py, imported only where a GPU run needs it (peer site, the
    environment record), so that loading this file puts nothing of bench/ on sys.path."""
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))
    from ligerd_bench import common
    return common


def _results_file():
    """bench/ligerd_bench/results.py (the results file), imported as _bench_common is."""
    _bench_common()
    from ligerd_bench import results
    return results


# Llama-3.2-1B's shape (its checkpoint config: tied embeddings, rope theta 500000).
MODELS = {
    "1b": dict(dims=dict(hidden=2048, layers=16, heads=32, kv_heads=8, ffn=8192), vocab=128256,
               tie=True, rope_theta=500000.0),
    # For tests on the CPU only.
    "tiny": dict(dims=dict(hidden=64, layers=2, heads=4, kv_heads=2, ffn=176), vocab=512,
                 tie=True, rope_theta=500000.0),
}

CONFIGS: Dict[str, Dict[str, object]] = {
    "hf": dict(label="HF eager", patch=None, env={}),
    "liger": dict(label="HF + Liger-Kernel", patch="liger_kernel.transformers:apply_liger_kernel_to_llama",
                  env={}),
    "ligerd-local": dict(label="HF + ligerd local", patch=train_llama.LIGERD_PATCH,
                         env={"LIGERD_DISPATCH": "local"}),
    "ligerd-remote": dict(label="HF + ligerd remote", patch=train_llama.LIGERD_PATCH,
                          env={"LIGERD_DISPATCH": "remote"}),
    "ligerd-sliced": dict(label="HF + ligerd local, sliced loss", patch=train_llama.LIGERD_PATCH,
                          env={"LIGERD_DISPATCH": "local", "LIGERD_FLCE_MODE": "sliced"}),
    # torch.compile(model) after patching ("compile": its mode; the module docstring says how)
    "hf-compile": dict(label="HF + torch.compile", patch=None, env={}, compile="default"),
    "liger-compile": dict(label="HF + Liger + compile",
                          patch="liger_kernel.transformers:apply_liger_kernel_to_llama", env={},
                          compile="default"),
    "ligerd-compile": dict(label="HF + ligerd + compile", patch=train_llama.LIGERD_PATCH,
                           env={"LIGERD_DISPATCH": "local"}, compile="default"),
    "ligerd-cudagraph": dict(label="HF + ligerd + CUDA graphs", patch=train_llama.LIGERD_PATCH,
                             env={"LIGERD_DISPATCH": "local"}, compile="reduce-overhead"),
}
LIGERD_CONFIGS = tuple(n for n in CONFIGS if n.startswith("ligerd"))


def needs_peer_site(spec: str) -> bool:
    """Whether a patch ("module:function") is Liger-Kernel's, installed into the peer site (every
    configuration that patches with it: liger and liger-compile)."""
    return spec.split(":", 1)[0].split(".", 1)[0] == "liger_kernel"
# The configurations every other one is compared with: name -> the suffix of its ratio keys.
PEERS = {"hf": "hf", "liger": "liger", "hf-compile": "hfc"}
# Warm-up steps a compiled configuration takes at least, per batch, so that no timed step compiles:
# default mode compiles at its first step; cudagraph trees warm up, then record, then replay.
COMPILE_WARMUP = {"default": 2, "reduce-overhead": 3}

# The issues' targets for ligerd (ratio, comparison, bound): issue 5's, and issue 20's (at least
# 1.15x Liger-Kernel and ahead of HF + torch.compile, each at its largest batch, at equal or lower
# memory).
TARGETS = {
    "tok_s_vs_hf": (">=", 1.2),        # throughput at each one's largest batch
    "tok_s_vs_liger": (">=", 1.15),
    "tok_s_vs_hfc": (">=", 1.0),
    "eq_tok_s_vs_hf": (">=", 1.2),     # throughput at equal batch
    "eq_tok_s_vs_liger": (">=", 1.0),
    "eq_tok_s_vs_hfc": (">=", 1.0),
    "eq_mem_vs_hf": ("<=", 0.6),       # peak memory at equal batch
    "eq_mem_vs_liger": ("<=", 1.0),
    "eq_mem_vs_hfc": ("<=", 1.0),
    "max_batch_vs_hf": (">=", 2.0),
}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="run_e2e.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--equal-batches", type=int, nargs="+", default=[1, 2],
                    help="batches every configuration is measured at (default 1 2)")
    ap.add_argument("--max-batch", type=int, default=64, help="largest batch tried (default 64)")
    ap.add_argument("--no-search", action="store_true", help="only the equal batches")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per batch (default 2)")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per batch (default 4)")
    ap.add_argument("--refine", type=int, default=1,
                    help="bisection steps for the largest batch after the doubling (default 1)")
    ap.add_argument("--quick", action="store_true",
                    help="1 warm-up + 2 timed steps per batch, no refinement")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per process (default 600)")
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "out"), "e2e"))
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--results", default=None,
                    help="results file to append to (default $LIGERD_RESULTS or bench/results.csv; "
                         "'none': do not append)")
    ap.add_argument("--note", default="", help="a note for every row of the results file")
    ap.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                    help="no GPU run: combine the e2e.json of earlier runs (each an --out directory; "
                         "a configuration in several: the last one's) into one report, summary and "
                         "plot under --out, e.g. runs split to fit a time limit")
    ap.add_argument("--fullgraph", choices=("auto", "on", "off"), default="auto",
                    help="compiled configurations: fullgraph=True, falling back to graph breaks "
                         "when it fails (auto, the default), or only on / off")
    # Internal: the child process; tests use the CPU, a tiny model and fake patches.
    ap.add_argument("--model", choices=list(MODELS), default="1b", help=argparse.SUPPRESS)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help=argparse.SUPPRESS)
    ap.add_argument("--patch", action="append", default=[], metavar="CONFIG=MODULE:FN",
                    help=argparse.SUPPRESS)
    ap.add_argument("--worker", choices=list(CONFIGS), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--batches", type=int, nargs="+", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    # Tests on the CPU compile with a fast backend (aot_eager); the benchmark uses Inductor.
    ap.add_argument("--compile-backend", default="inductor", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.warmup, args.steps, args.refine = 1, 2, 0
    if min(args.equal_batches) < 1 or args.max_batch < 1 or args.seq < 1 or args.steps < 1:
        ap.error("batches, --seq and --steps must be at least 1")
    if args.warmup < 0 or args.refine < 0:
        ap.error("--warmup and --refine must be at least 0")
    args.patches = {}
    for p in args.patch:
        name, _, spec = p.partition("=")
        if name not in CONFIGS or ":" not in spec:
            ap.error(f"--patch wants CONFIG=MODULE:FN with CONFIG in {list(CONFIGS)}, got {p!r}")
        args.patches[name] = spec
    return args


def search_batches(equal: Sequence[int], max_batch: int, search: bool = True) -> List[int]:
    """The batches one process tries, ascending: the equal batches, then doubling from the
    largest of them up to max_batch."""
    out = set(equal)
    if search:
        b = max(equal)
        while b * 2 <= max_batch:
            b *= 2
            out.add(b)
    return sorted(out)


def is_oom(e: BaseException) -> bool:
    try:
        import torch
        if isinstance(e, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return "out of memory" in str(e).lower()


# ---------------------------------------------------------------------------------------------
# Compiled configurations

def _dynamo_counts() -> Dict[str, int]:
    """torch._dynamo's running totals: frames compiled (a recompile counts) and graph breaks."""
    from torch._dynamo.utils import counters
    return {"frames": int(counters["frames"].get("ok", 0)) + int(counters["stats"].get("unique_graphs", 0)),
            "graph_breaks": int(sum(counters["graph_break"].values())),
            "cudagraph_skips": int(counters["inductor"].get("cudagraph_skips", 0))}


def _is_compile_error(e: BaseException) -> bool:
    """An error torch.compile raised (a graph break under fullgraph=True, a backend failure)."""
    return any(c.__module__.startswith(("torch._dynamo", "torch._inductor", "torch.fx"))
               for c in type(e).__mro__)


class Compiled:
    """The model wrapped in torch.compile(mode); with fullgraph "auto", fullgraph=True first and,
    when that fails at a call, torch._dynamo.reset() and fullgraph=False (``fallback`` says why).
    Calling it runs the model's forward; under reduce-overhead each call begins a new cudagraph
    step (torch.compiler.cudagraph_mark_step_begin), as a training loop must."""

    def __init__(self, model, mode: str, fullgraph: str = "auto", backend: str = "inductor"):
        self.model, self.mode, self.backend = model, mode, backend
        self.auto = fullgraph == "auto"
        self.fullgraph = fullgraph != "off"
        self.fallback = ""
        self.fn = self._compile()

    def _compile(self):
        import torch
        if self.backend == "inductor":
            return torch.compile(self.model, mode=self.mode, fullgraph=self.fullgraph)
        return torch.compile(self.model, backend=self.backend, fullgraph=self.fullgraph)

    def __call__(self, **kw):
        import torch
        if self.mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        try:
            return self.fn(**kw)
        except Exception as e:  # noqa: BLE001: only a fullgraph failure is retried
            if not (self.auto and self.fullgraph) or is_oom(e) or not _is_compile_error(e):
                raise
            first = (str(e).strip().splitlines() or [""])[0]
            self.fallback = f"fullgraph=True failed: {type(e).__name__}: {first}"[:300]
            print(f"  torch.compile: {self.fallback}; compiling with fullgraph=False", flush=True)
            torch._dynamo.reset()
            self.fullgraph = False
            self.fn = self._compile()
            for p in self.model.parameters():
                p.grad = None
            return self.fn(**kw)

    def describe(self, graph_breaks: int) -> str:
        what = f"mode={self.mode}"
        if self.fullgraph:
            return f"{what}, fullgraph"
        return f"{what}, {graph_breaks} graph breaks" + (f" ({self.fallback})" if self.fallback else "")


# ---------------------------------------------------------------------------------------------
# The child: one configuration, batches in ascending order until one runs out of memory

def worker_main(args: argparse.Namespace) -> int:
    import torch
    name = args.worker
    result_path = Path(args.result)
    rows: List[Dict[str, object]] = []
    info: Dict[str, object] = {"config": name, "rows": rows, "error": "", "dispatch": ""}

    def save():
        result_path.write_text(json.dumps(info))

    try:
        spec = args.patches.get(name, CONFIGS[name]["patch"])
        if spec:
            if needs_peer_site(spec):
                _bench_common().add_peer_site()
            train_llama.resolve(spec)()
        m = MODELS[args.model]
        config = train_llama.llama_config(m["dims"], m["vocab"], args.seq,
                                          tie_word_embeddings=m["tie"], rope_theta=m["rope_theta"])
        dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
        model = train_llama.build_model(config, args.device, dtype, seed=0)
        info["params"] = sum(p.numel() for p in model.parameters())
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                **({"fused": True} if args.device == "cuda" else {}))
        mode = CONFIGS[name].get("compile")
        fwd = (Compiled(model, mode, args.fullgraph, args.compile_backend) if mode else model)
    except Exception as e:  # noqa: BLE001: the parent reports it beside the others
        import traceback
        traceback.print_exc()
        info["error"] = f"{type(e).__name__}: {e}"
        save()
        return 1
    gen = torch.Generator(device="cpu").manual_seed(1)
    cuda = args.device == "cuda"
    warmup = max(args.warmup, COMPILE_WARMUP[mode]) if mode else args.warmup

    def sync():
        if cuda:
            torch.cuda.synchronize()

    for batch in args.batches:
        row: Dict[str, object] = {"config": name, "batch": batch, "seq": args.seq}
        try:
            opt.zero_grad(set_to_none=True)
            sync()
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            ids = torch.randint(0, m["vocab"], (batch, args.seq), generator=gen).to(args.device)
            t0 = time.perf_counter()
            t_first = None
            loss = None
            counts = _dynamo_counts() if mode else None
            for i in range(warmup + args.steps):
                if i == warmup:
                    sync()
                    row["warmup_s"] = time.perf_counter() - t0
                    counts = _dynamo_counts() if mode else None
                    t0 = time.perf_counter()
                loss = fwd(input_ids=ids, labels=ids, use_cache=False).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                if mode and i == 0:
                    sync()
                    t_first = time.perf_counter() - t0
            sync()
            dt = time.perf_counter() - t0
            row.update(status="ok", tokens_per_s=args.steps * batch * args.seq / dt,
                       step_ms=dt / args.steps * 1e3, loss=float(loss.item()),
                       peak_gib=(torch.cuda.max_memory_allocated() / 2**30) if cuda else 0.0)
            if mode:
                after = _dynamo_counts()
                row.update(first_step_s=t_first, warmup_steps=warmup,
                           compile=fwd.describe(after["graph_breaks"]))
                notes = []
                if after["frames"] != counts["frames"]:
                    notes.append("the timed steps compiled again")
                if after["cudagraph_skips"]:
                    notes.append(f"cudagraphs skipped {after['cudagraph_skips']} graph(s)")
                if notes:
                    row["compile"] += "; " + ", ".join(notes)
                info["compile"] = row["compile"]
            print(f"  {CONFIGS[name]['label']}: batch {batch}: {row['tokens_per_s']:,.0f} tok/s, "
                  f"{row['peak_gib']:.1f} GiB"
                  + (f" ({row['compile']}; first step {t_first:.1f} s)" if mode else ""), flush=True)
            rows.append(row)
            save()
        except Exception as e:  # noqa: BLE001
            if is_oom(e):
                row.update(status="oom")
                print(f"  {CONFIGS[name]['label']}: batch {batch}: out of memory", flush=True)
                rows.append(row)
            else:
                import traceback
                traceback.print_exc()
                row.update(status="error", error=f"{type(e).__name__}: {e}"[:500])
                if mode:
                    row["compile"] = fwd.describe(_dynamo_counts()["graph_breaks"])
                info["error"] = row["error"]
                rows.append(row)
            save()
            break  # memory after an OOM is not to be trusted: a fresh process continues
    if name in LIGERD_CONFIGS:
        info["dispatch"] = train_llama.describe_dispatch()  # after the ops ran: per-device modes
    save()
    return 1 if info["error"] else 0


# ---------------------------------------------------------------------------------------------
# The parent

def child_command(args: argparse.Namespace, name: str, batches: Sequence[int], result: Path) -> List[str]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--result", str(result),
           "--batches", *map(str, batches), "--seq", str(args.seq), "--warmup", str(args.warmup),
           "--steps", str(args.steps), "--model", args.model, "--device", args.device,
           "--fullgraph", args.fullgraph, "--compile-backend", args.compile_backend]
    for k, v in args.patches.items():
        cmd += ["--patch", f"{k}={v}"]
    return cmd


def run_child(args: argparse.Namespace, name: str, batches: Sequence[int], out: Path, tag: str) -> Dict:
    result = out / f"worker_{name}_{tag}.json"
    result.unlink(missing_ok=True)
    env = dict(os.environ)
    env.update(CONFIGS[name]["env"])
    print(f"== {CONFIGS[name]['label']}: batches {' '.join(map(str, batches))} x {args.seq} tokens",
          flush=True)
    try:
        proc = subprocess.run(child_command(args, name, batches, result), env=env, timeout=args.timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    info = json.loads(result.read_text()) if result.exists() else {"config": name, "rows": [], "error": ""}
    if rc != 0 and not info.get("error"):
        done = {r["batch"] for r in info["rows"]}
        missing = [b for b in batches if b not in done]
        why = (f"timed out after {args.timeout:.0f} s" if rc == "timeout"
               else f"the process exited with status {rc}")
        if missing and info["rows"] and info["rows"][-1].get("status") == "ok":
            # A hard crash (e.g. the CUDA context died) right after a batch that fit.
            info["rows"].append({"config": name, "batch": missing[0], "seq": args.seq,
                                 "status": "error", "error": why})
        info["error"] = why
    return info


def largest_fit(rows: Sequence[Dict]) -> "tuple[Optional[int], Optional[int]]":
    """(largest batch that ran, smallest batch that ran out of memory) over a config's rows."""
    ok = [r["batch"] for r in rows if r.get("status") == "ok"]
    oom = [r["batch"] for r in rows if r.get("status") == "oom"]
    fit = max(ok) if ok else None
    bad = min((b for b in oom if fit is None or b > fit), default=None)
    return fit, bad


def run_config(args: argparse.Namespace, name: str, out: Path) -> Dict:
    batches = search_batches(args.equal_batches, args.max_batch, not args.no_search)
    info = run_child(args, name, batches, out, "main")
    rows = list(info["rows"])
    errors = [info["error"]] if info.get("error") else []
    if not args.no_search and not errors:
        for i in range(args.refine):
            fit, bad = largest_fit(rows)
            if fit is None or bad is None or bad - fit <= 1:
                break
            mid = (fit + bad) // 2
            sub = run_child(args, name, [mid], out, f"refine{i}")
            for r in sub["rows"]:
                r["phase"] = "refine"
            rows += sub["rows"]
            if sub.get("error"):
                errors.append(sub["error"])
                break
    fit, bad = largest_fit(rows)
    return {"config": name, "label": CONFIGS[name]["label"], "rows": rows, "error": "; ".join(errors),
            "dispatch": info.get("dispatch", ""), "params": info.get("params"),
            "max_batch": fit, "first_oom": bad,
            "searched_to": None if args.no_search else args.max_batch}


def _row_at(res: Dict, batch: Optional[int]) -> Optional[Dict]:
    if batch is None:
        return None
    for r in res["rows"]:
        if r["batch"] == batch and r.get("status") == "ok":
            return r
    return None


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b == 0 or (isinstance(b, float) and math.isnan(b)):
        return None
    return a / b


def equal_batch(a: Dict, b: Dict, equal_batches: Sequence[int]) -> Optional[int]:
    """The largest of the equal batches at which both configurations ran."""
    both = [x for x in equal_batches if _row_at(a, x) and _row_at(b, x)]
    return max(both) if both else None


def summarize(results: Dict[str, Dict], equal_batches: Sequence[int]) -> List[Dict[str, object]]:
    """Per configuration: its largest batch and tokens/s there, and the ratios against HF eager and
    Liger: throughput at each one's largest batch; throughput and peak memory at the largest equal
    batch both ran; the largest batches."""
    summary = []
    for name, res in results.items():
        at_max = _row_at(res, res["max_batch"])
        s: Dict[str, object] = {
            "config": name, "label": res["label"], "max_batch": res["max_batch"],
            "first_oom": res["first_oom"], "error": res["error"], "compile": compile_note(res),
            "tok_s_at_max": at_max["tokens_per_s"] if at_max else None,
            "peak_gib_at_max": at_max["peak_gib"] if at_max else None,
        }
        for b in equal_batches:
            r = _row_at(res, b)
            s[f"tok_s_b{b}"] = r["tokens_per_s"] if r else None
            s[f"peak_gib_b{b}"] = r["peak_gib"] if r else None
        for peer, key in PEERS.items():
            p = results.get(peer)
            if p is None or peer == name:
                continue
            pm = _row_at(p, p["max_batch"])
            s[f"tok_s_vs_{key}"] = _ratio(s["tok_s_at_max"], pm["tokens_per_s"] if pm else None)
            b_eq = equal_batch(res, p, equal_batches)
            s[f"eq_batch_vs_{key}"] = b_eq
            mine, theirs = _row_at(res, b_eq), _row_at(p, b_eq)
            s[f"eq_tok_s_vs_{key}"] = _ratio(mine and mine["tokens_per_s"], theirs and theirs["tokens_per_s"])
            s[f"eq_mem_vs_{key}"] = _ratio(mine and mine["peak_gib"], theirs and theirs["peak_gib"])
            if peer == "hf":
                s["max_batch_vs_hf"] = _ratio(res["max_batch"], p["max_batch"])
        summary.append(s)
    return summary


def compile_note(res: Dict) -> str:
    """How a compiled configuration compiled (its last measured row's note), "" for eager ones."""
    notes = [r.get("compile") for r in res["rows"] if r.get("compile")]
    return notes[-1] if notes else ""


def best_ligerd(summary: Sequence[Dict]) -> Optional[Dict]:
    """The ligerd configuration with the most tokens/s at its largest batch (with or without
    compile: the issue's "HF + ligerd, with torch.compile where it helps")."""
    mine = [s for s in summary if s["config"] in LIGERD_CONFIGS and s.get("tok_s_at_max")]
    return max(mine, key=lambda s: s["tok_s_at_max"]) if mine else None


def meets(key: str, value: Optional[float]) -> str:
    if value is None or key not in TARGETS:
        return ""
    op, bound = TARGETS[key]
    ok = value >= bound if op == ">=" else value <= bound
    return "yes" if ok else "NO"


def _f(v, fmt="{:.2f}") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return fmt.format(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x[i])) for x in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def format_report(results: Dict[str, Dict], summary: Sequence[Dict], equal_batches: Sequence[int],
                  seq: int) -> str:
    """The measurements per batch, then the ratios beside the issue's targets."""
    out = []
    header = ["config"] + [f"batch {b}" for b in equal_batches] + ["largest batch", "tok/s there",
                                                                   "GiB there"]
    rows = []
    for s in summary:
        cells = [s["label"]]
        for b in equal_batches:
            t, m = s.get(f"tok_s_b{b}"), s.get(f"peak_gib_b{b}")
            cells.append(f"{t / 1e3:.1f}K tok/s, {m:.1f} GiB" if t is not None else
                         ("failed" if s["error"] else "out of memory"))
        if s["max_batch"] is None:
            cells.append("none" if not s["error"] else "failed")
        else:
            more = "" if s["first_oom"] is not None else "+ (no OOM up to the search limit)"
            cells.append(f"{s['max_batch']}{more}")
        cells.append(_f(s["tok_s_at_max"], "{:,.0f}"))
        cells.append(_f(s["peak_gib_at_max"], "{:.1f}"))
        rows.append(cells)
    out.append(f"Llama-3.2-1B shape, bf16, AdamW, sequence {seq}: tokens/s and peak memory "
               f"(torch.cuda.max_memory_allocated)")
    out.append(_table(header, rows))
    for s in summary:
        if s["error"]:
            out.append(f"{s['label']} failed: {s['error']}")
        d = results[s["config"]].get("dispatch")
        if d:
            out.append(f"{s['label']} dispatch: {d}")
        if s.get("compile"):
            first = [r for r in results[s["config"]]["rows"] if r.get("first_step_s") is not None]
            when = (f"; first step (compiling) {first[0]['first_step_s']:.1f} s, not timed"
                    if first else "")
            out.append(f"{s['label']} compiled: {s['compile']}{when}")

    keys = [("tok_s_vs_hf", "tokens/s vs HF eager (each at its largest batch)"),
            ("tok_s_vs_liger", "tokens/s vs Liger (each at its largest batch)"),
            ("tok_s_vs_hfc", "tokens/s vs HF + compile (each at its largest batch)"),
            ("eq_tok_s_vs_hf", "tokens/s vs HF eager at equal batch"),
            ("eq_tok_s_vs_liger", "tokens/s vs Liger at equal batch"),
            ("eq_tok_s_vs_hfc", "tokens/s vs HF + compile at equal batch"),
            ("eq_mem_vs_hf", "peak memory vs HF eager at equal batch"),
            ("eq_mem_vs_liger", "peak memory vs Liger at equal batch"),
            ("eq_mem_vs_hfc", "peak memory vs HF + compile at equal batch"),
            ("max_batch_vs_hf", "largest batch vs HF eager")]
    shown = [s for s in summary if s["config"] != "hf"]
    if shown:
        header = ["ratio", "target"] + [s["label"] for s in shown]
        rows = []
        for key, title in keys:
            if not any(key in s for s in shown):
                continue
            op, bound = TARGETS[key]
            cells = [title, f"{op} {bound:g}"]
            for s in shown:
                v = s.get(key)
                if v is None:
                    cells.append("-")
                    continue
                mark = meets(key, v) if s["config"] in LIGERD_CONFIGS else ""
                cells.append(f"{v:.2f}x" + (f" {mark}" if mark else ""))
            rows.append(cells)
        eqb = sorted({s[k] for s in shown for k in (f"eq_batch_vs_{v}" for v in PEERS.values())
                      if s.get(k)})
        out.append("")
        out.append("Ratios (targets from issues 5 and 20 apply to the ligerd columns; equal batch = "
                   f"{', '.join(map(str, eqb)) or '-'})")
        out.append(_table(header, rows))
        best = best_ligerd(summary)
        if best:
            parts = [f"{key.split('_vs_')[1]} {best[key]:.2f}x ({meets(key, best[key]) or '-'})"
                     for key in ("tok_s_vs_liger", "tok_s_vs_hfc", "tok_s_vs_hf") if best.get(key) is not None]
            out.append(f"Best ligerd configuration: {best['label']}, {best['tok_s_at_max']:,.0f} tok/s at "
                       f"batch {best['max_batch']}" + (": vs " + ", ".join(parts) if parts else ""))
    return "\n".join(out)


CSV_COLUMNS = ["config", "label", "batch", "seq", "phase", "status", "tokens_per_s", "step_ms",
               "peak_gib", "loss", "warmup_steps", "warmup_s", "first_step_s", "compile", "error"]


def write_outputs(results: Dict[str, Dict], summary: List[Dict], out: Path, meta: Dict,
                  plot: bool = True) -> List[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with open(out / "e2e.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for name, res in results.items():
            for r in sorted(res["rows"], key=lambda r: r["batch"]):
                w.writerow({"label": res["label"], "phase": r.get("phase", "main"),
                            **{k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()}})
    written.append(out / "e2e.csv")
    cols = sorted({k for s in summary for k in s}, key=lambda k: (k not in ("config", "label"), k))
    with open(out / "e2e_summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for s in summary:
            w.writerow({k: (f"{v:.4g}" if isinstance(v, float) else ("" if v is None else v))
                        for k, v in s.items()})
    written.append(out / "e2e_summary.csv")
    (out / "e2e.json").write_text(json.dumps({"meta": meta, "results": results, "summary": summary,
                                              "targets": TARGETS}, indent=2, default=str))
    written.append(out / "e2e.json")
    if plot:
        p = plot_results(results, out / "e2e.png", meta)
        if p:
            written.append(p)
    return written


def plot_results(results: Dict[str, Dict], path: Path, meta: Dict) -> Optional[Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("run_e2e: matplotlib is not installed: no PNG", file=sys.stderr)
        return None
    from matplotlib.ticker import ScalarFormatter
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.8))
    colors = {n: f"C{i}" for i, n in enumerate(CONFIGS)}
    for name, res in results.items():
        ok = sorted((r for r in res["rows"] if r.get("status") == "ok"), key=lambda r: r["batch"])
        if ok:
            b = [r["batch"] for r in ok]
            style = "--" if CONFIGS[name].get("compile") else "-"  # compiled: dashed
            ax1.plot(b, [r["tokens_per_s"] / 1e3 for r in ok], marker="o", label=res["label"],
                     color=colors[name], linestyle=style)
            ax2.plot(b, [r["peak_gib"] for r in ok], marker="o", label=res["label"], color=colors[name],
                     linestyle=style)
    for ax, yl, title in ((ax1, "K tokens/s", "throughput"), (ax2, "GiB", "peak memory")):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel(f"batch (x {meta.get('seq')} tokens)")
        ax.set_ylabel(yl)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if meta.get("gpu_gib"):
        ax2.axhline(meta["gpu_gib"], color="red", linewidth=0.8, linestyle="--", label="GPU memory")
    labels = [res["label"] for res in results.values()]
    mb = [res["max_batch"] or 0 for res in results.values()]
    bars = ax3.bar(range(len(labels)), mb, color=[colors[n] for n in results])
    ax3.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
    tok = []
    for res in results.values():
        r = _row_at(res, res["max_batch"])
        tok.append(f"\n{r['tokens_per_s'] / 1e3:.1f}K tok/s" if r else "")
    for bar, v, t in zip(bars, mb, tok):
        ax3.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{v}{t}", ha="center",
                 va="bottom", fontsize=7)
    ax3.set_title("largest batch that fits (tokens/s there)")
    fig.suptitle(str(meta.get("title", "")), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def merge_runs(dirs: Sequence[str]) -> "tuple[Dict[str, Dict], Dict, List[int]]":
    """The results of earlier runs' e2e.json, in CONFIGS order (a configuration measured in several
    runs: the last run's), their metadata (the last run's, with every run's seconds summed) and
    the equal batches every run measured."""
    results: Dict[str, Dict] = {}
    meta: Dict = {}
    equal: Optional[set] = None
    seconds = 0.0
    for d in dirs:
        data = json.loads((Path(d) / "e2e.json").read_text())
        results.update(data["results"])
        meta = dict(data.get("meta") or {})
        seconds += float(meta.get("seconds") or 0)
        eq = set(meta.get("equal_batches") or [])
        equal = eq if equal is None else equal & eq
    meta["seconds"] = round(seconds, 1)
    meta["merged_from"] = [str(d) for d in dirs]
    ordered = {n: results[n] for n in CONFIGS if n in results}
    return ordered, meta, sorted(equal or [])


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    if args.merge:
        results, meta, equal = merge_runs(args.merge)
        summary = summarize(results, equal)
        print(format_report(results, summary, equal, int(meta.get("seq") or args.seq)))
        for p in write_outputs(results, summary, Path(args.out), meta, plot=not args.no_plot):
            print(f"wrote {p}")
        return 1 if any(r["error"] for r in results.values()) else 0
    problem = train_llama.gpu_problem(args.device)
    if problem:
        print(f"run_e2e: cannot run: {problem}.", file=sys.stderr)
        return train_llama.NO_GPU_EXIT
    import torch
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    m = MODELS[args.model]
    meta = {"model": args.model, **m["dims"], "vocab": m["vocab"], "seq": args.seq,
            "warmup": args.warmup, "steps": args.steps, "equal_batches": args.equal_batches,
            "max_batch_tried": None if args.no_search else args.max_batch,
            "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
            "gpu_gib": (torch.cuda.get_device_properties(0).total_memory / 2**30
                        if args.device == "cuda" else None),
            "mps": os.environ.get("CUDA_MPS_PIPE_DIRECTORY", ""), "torch": torch.__version__}
    try:
        import transformers
        meta["transformers"] = transformers.__version__
    except ImportError:
        pass
    if args.device == "cuda":
        meta["environment"] = _bench_common().environment()  # torch, CUDA, GPU, triton, ligerd, liger_kernel
    meta["title"] = (f"Llama-3.2-1B shape ({m['dims']['layers']} layers, hidden {m['dims']['hidden']}, "
                     f"vocab {m['vocab']}), bf16, AdamW, seq {args.seq}, on {meta['device']}")
    t0 = time.time()
    results = {name: run_config(args, name, out) for name in args.configs}
    meta["seconds"] = round(time.time() - t0, 1)
    summary = summarize(results, args.equal_batches)
    print()
    print(format_report(results, summary, args.equal_batches, args.seq))
    for p in write_outputs(results, summary, out, meta, plot=not args.no_plot):
        print(f"wrote {p}")
    if args.results != "none":
        rf = _results_file()
        dtype = "bfloat16" if args.device == "cuda" else "float32"
        rf.record(rf.e2e_rows(results, args.model, dtype),
                  rf.run_metadata(meta.get("environment") or {}, gpu=meta["device"], torch=meta["torch"]),
                  path=args.results, note=args.note)
    print(f"run_e2e: {meta['seconds']} s")
    return 1 if any(r["error"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
