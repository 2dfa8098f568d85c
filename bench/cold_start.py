#!/usr/bin/env python3
"""Cold start (issue 20): the time from a fresh node to the end of the first training step, and how
much of it is ligerd's own.

Each phase is a fresh process (nothing imported, no CUDA context, no in-memory JIT layer) that
imports torch, transformers (and ligerd), patches, builds the end-to-end benchmark's model
(bench/e2e/run_e2e.py's MODELS: the Llama-3.2-1B shape, bf16, fused AdamW) and runs two training
steps at a small batch (default 1 x 4096 tokens):

  hf                 HF eager, no ligerd: the baseline's own cold start
  ligerd-cold        ligerd (local dispatch) with LIGERD_CACHE_DIR a new, empty directory: a fresh
                     node, every kernel variant the step needs is compiled by NVRTC at its first use
  ligerd-warm        the same again, reusing that directory: every variant comes from the disk cache
  ligerd-precompiled with --ligerd-bin: `ligerd --precompile_arch=<the GPU's> --cache_dir=<new dir>`
                     first (timed: the row "precompile"), then a fresh process on that directory:
                     the "precompiled kernels shipped" case

Per phase: seconds from the parent starting the process to the end of the first step (its
synchronisation), split into imports, patch, model + optimizer build, first step; the second
step's time (the steady state the first is compared with); and ligerd's JIT cache counters over the
first step (ligerd._C.jit_stats(): misses, compiles, compile_seconds; where the extension predates
it, the number of cache entries the directory gained). ligerd's own share of the cold start is
(a) NVRTC's compile seconds inside the first step, and (b) the cold first step minus the warm one.

Outputs: a table, out/cold_start/cold_start.json, and rows appended to the results file (op
"cold_start", impl the phase, pass "first_step", ms the time to the first step's end; the
breakdown and the JIT numbers in the note; bench/ligerd_bench/results.py).

    python3 bench/cold_start.py                               # hf, ligerd-cold, ligerd-warm
    python3 bench/cold_start.py --ligerd-bin build/server/ligerd   # + precompile, ligerd-precompiled

Without a CUDA GPU, only the precompile row runs (it needs NVRTC, not a GPU; with --ligerd-bin and
--arch), then the script says a GPU is needed for the rest and exits 2.
"""

from __future__ import annotations

import time

T_START = time.time()  # the child's first instant, before any import

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Dict, List, Optional, Sequence  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NO_GPU_EXIT = 2

PHASES = {
    "hf": dict(label="HF eager (no ligerd)", ligerd=False),
    "ligerd-cold": dict(label="ligerd, empty cache", ligerd=True),
    "ligerd-warm": dict(label="ligerd, warm cache", ligerd=True),
    "ligerd-precompiled": dict(label="ligerd, precompiled cache", ligerd=True),
}
LIGERD_PATCH = "ligerd.transformers:apply_liger_kernel_to_llama"


def _load_e2e():
    """bench/e2e/run_e2e.py (its MODELS and examples/train_llama.py's model building), by path."""
    spec = importlib.util.spec_from_file_location("run_e2e", HERE / "e2e" / "run_e2e.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("run_e2e", mod)
    spec.loader.exec_module(mod)
    return mod


def _results_file():
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))
    from ligerd_bench import results
    return results


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="cold_start.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phases", nargs="+", choices=list(PHASES), default=None,
                    help="default: hf ligerd-cold ligerd-warm (+ ligerd-precompiled with --ligerd-bin)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--ligerd-bin", default=os.environ.get("LIGERD_BIN") or None,
                    help="the ligerd binary, for the precompile row and ligerd-precompiled "
                         "(default $LIGERD_BIN)")
    ap.add_argument("--arch", default=None,
                    help="precompile arch (default: the GPU's, e.g. sm_90)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per process (default 600)")
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "out"), "cold_start"))
    ap.add_argument("--results", default=None,
                    help="results file to append to (default $LIGERD_RESULTS or bench/results.csv; "
                         "'none': do not append)")
    ap.add_argument("--note", default="", help="a note for every row of the results file")
    ap.add_argument("--keep-cache", action="store_true",
                    help="keep the temporary JIT cache directories (default: removed at the end)")
    # Internal: the child process; tests use the CPU, a tiny model and a fake patch.
    ap.add_argument("--model", default="1b", help=argparse.SUPPRESS)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help=argparse.SUPPRESS)
    ap.add_argument("--patch", default=LIGERD_PATCH, help=argparse.SUPPRESS)
    ap.add_argument("--worker", choices=list(PHASES), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.batch < 1 or args.seq < 1:
        ap.error("--batch and --seq must be at least 1")
    if args.phases is None:
        args.phases = ["hf", "ligerd-cold", "ligerd-warm"] + (["ligerd-precompiled"] if args.ligerd_bin else [])
    if "ligerd-precompiled" in args.phases and not args.ligerd_bin:
        ap.error("ligerd-precompiled needs --ligerd-bin (or $LIGERD_BIN)")
    return args


# ---------------------------------------------------------------------------------------------
# The child: one phase

def jit_stats() -> Optional[Dict[str, float]]:
    """ligerd's JIT cache counters in this process (local executors), or None where the extension
    does not have them (an older build) or ligerd is not loaded."""
    if "ligerd" not in sys.modules:
        return None
    try:
        from ligerd import _extension
        fn = getattr(_extension.load(), "jit_stats", None)
        return fn() if fn is not None else None
    except Exception:  # noqa: BLE001: a fake patch in tests, no extension
        return None


def cache_entries(path: Optional[str]) -> Optional[int]:
    """Compiled kernel modules in a JIT cache directory (<op>.<variant>.<arch>.<key>.<kind>)."""
    if not path or not os.path.isdir(path):
        return None
    return sum(1 for n in os.listdir(path) if n.endswith((".cubin", ".ptx")))


def worker_main(args: argparse.Namespace) -> int:
    info: Dict[str, object] = {"phase": args.worker, "error": ""}
    marks: Dict[str, float] = {"start": args.t0 if args.t0 is not None else T_START, "exec": T_START}

    def save():
        info["marks"] = marks
        Path(args.result).write_text(json.dumps(info))

    try:
        import torch
        import transformers  # noqa: F401
        e2e = _load_e2e()
        train_llama = e2e.train_llama
        marks["imports"] = time.time()
        if PHASES[args.worker]["ligerd"]:
            train_llama.resolve(args.patch)()
        marks["patch"] = time.time()
        m = e2e.MODELS[args.model]
        config = train_llama.llama_config(m["dims"], m["vocab"], args.seq, tie_word_embeddings=m["tie"],
                                          rope_theta=m["rope_theta"])
        cuda = args.device == "cuda"
        model = train_llama.build_model(config, args.device, torch.bfloat16 if cuda else torch.float32, seed=0)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if cuda else {}))
        ids = torch.randint(0, m["vocab"], (args.batch, args.seq),
                            generator=torch.Generator().manual_seed(1)).to(args.device)
        if cuda:
            torch.cuda.synchronize()
        marks["model"] = time.time()
        entries0 = cache_entries(os.environ.get("LIGERD_CACHE_DIR"))
        for step in ("first_step", "second_step"):
            jit0 = jit_stats()
            model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
            marks[step] = time.time()
            jit1 = jit_stats()
            if step == "first_step":
                info["jit"] = ({k: jit1[k] - (jit0 or {}).get(k, 0) for k in jit1} if jit1 else None)
                e1 = cache_entries(os.environ.get("LIGERD_CACHE_DIR"))
                info["entries_added"] = None if e1 is None or entries0 is None else e1 - entries0
        if PHASES[args.worker]["ligerd"]:
            info["dispatch"] = train_llama.describe_dispatch()
    except Exception as e:  # noqa: BLE001: the parent reports it as a row
        import traceback
        traceback.print_exc()
        info["error"] = f"{type(e).__name__}: {e}"[:500]
    save()
    return 1 if info["error"] else 0


# ---------------------------------------------------------------------------------------------
# The parent

def child_command(args: argparse.Namespace, phase: str, result: Path) -> List[str]:
    return [sys.executable, os.path.abspath(__file__), "--worker", phase, "--result", str(result),
            "--batch", str(args.batch), "--seq", str(args.seq), "--model", args.model,
            "--device", args.device, "--patch", args.patch, "--t0", repr(time.time())]


def breakdown(marks: Dict[str, float]) -> Dict[str, Optional[float]]:
    """Seconds per stage from a child's time marks (absent stages: None)."""
    order = ["start", "imports", "patch", "model", "first_step", "second_step"]
    out: Dict[str, Optional[float]] = {}
    for a, b in zip(order, order[1:]):
        out[f"{b}_s"] = (marks[b] - marks[a]) if a in marks and b in marks else None
    out["to_first_step_s"] = (marks["first_step"] - marks["start"]
                              if "first_step" in marks and "start" in marks else None)
    return out


def run_phase(args: argparse.Namespace, phase: str, cache_dir: Optional[str], out: Path) -> Dict:
    result = out / f"worker_{phase}.json"
    result.unlink(missing_ok=True)
    env = dict(os.environ)
    if PHASES[phase]["ligerd"]:
        env.update(LIGERD_DISPATCH="local", LIGERD_CACHE_DIR=cache_dir or "")
    print(f"== {PHASES[phase]['label']}" + (f" (LIGERD_CACHE_DIR={cache_dir})" if cache_dir else ""), flush=True)
    try:
        rc = subprocess.run(child_command(args, phase, result), env=env, timeout=args.timeout).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    info = json.loads(result.read_text()) if result.exists() else {"phase": phase, "error": ""}
    if rc != 0 and not info.get("error"):
        info["error"] = (f"timed out after {args.timeout:.0f} s" if rc == "timeout"
                         else f"the process exited with status {rc}")
    info.update(breakdown(info.get("marks") or {}))
    info["label"] = PHASES[phase]["label"]
    info["cache_dir"] = cache_dir
    return info


def gpu_arch() -> Optional[str]:
    try:
        import torch
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return f"sm_{major}{minor}"
    except ImportError:
        pass
    return None


PRECOMPILE_LINE = re.compile(r"precompiled (\d+) kernel variants for (\S+) into .*: (\d+) compiled, "
                             r"(\d+) already cached, (\d+) failed, (\d+) not stored, ([\d.]+) s")


def run_precompile(binary: str, arch: str, cache_dir: str, timeout: float) -> Dict:
    """`ligerd --precompile_arch` into cache_dir: wall seconds, the binary's own report."""
    t0 = time.time()
    try:
        p = subprocess.run([binary, f"--precompile_arch={arch}", f"--cache_dir={cache_dir}"],
                           capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"phase": "precompile", "label": f"ligerd --precompile_arch={arch}", "error": str(e),
                "wall_s": time.time() - t0}
    res = {"phase": "precompile", "label": f"ligerd --precompile_arch={arch}", "wall_s": time.time() - t0,
           "error": "" if p.returncode == 0 else f"exit {p.returncode}: {p.stderr.strip()[-300:]}",
           "threads": os.cpu_count()}
    m = PRECOMPILE_LINE.search(p.stdout)
    if m:
        res.update(variants=int(m.group(1)), compiled=int(m.group(3)), failed=int(m.group(5)),
                   seconds=float(m.group(7)))
    return res


def ligerd_share(results: Dict[str, Dict]) -> Dict[str, Optional[float]]:
    """ligerd's own part of the cold start: NVRTC seconds in the cold first step, the cold first
    step minus the warm one, and the cold time to the first step minus HF's."""
    cold, warm, hf = (results.get(k) for k in ("ligerd-cold", "ligerd-warm", "hf"))

    def get(r, k):
        return None if not r or r.get("error") else r.get(k)

    jit = get(cold, "jit") or {}
    out = {"jit_compile_s": jit.get("compile_seconds"), "jit_compiles": jit.get("compiles"),
           "entries_added": get(cold, "entries_added")}
    a, b = get(cold, "first_step_s"), get(warm, "first_step_s")
    out["cold_minus_warm_first_step_s"] = None if a is None or b is None else a - b
    a, b = get(cold, "to_first_step_s"), get(hf, "to_first_step_s")
    out["cold_minus_hf_to_first_step_s"] = None if a is None or b is None else a - b
    return out


def _f(v, fmt="{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def format_report(results: Dict[str, Dict], share: Dict[str, Optional[float]]) -> str:
    cols = ["phase", "to 1st step end", "imports", "patch", "model", "1st step", "2nd step", "JIT compiles",
            "NVRTC s"]
    rows = []
    for r in results.values():
        if r["phase"] == "precompile":
            what = (f"{r.get('variants', '?')} variants, {r.get('compiled', '?')} compiled"
                    if not r["error"] else "failed")
            rows.append([r["label"], _f(r.get("wall_s")), "", "", "", "", "", what, _f(r.get("seconds"))])
            continue
        if r.get("error"):
            rows.append([r["label"], "failed", "", "", "", "", "", "", ""])
            continue
        jit = r.get("jit") or {}
        compiles = jit.get("compiles", r.get("entries_added"))
        rows.append([r["label"], _f(r.get("to_first_step_s")), _f(r.get("imports_s")), _f(r.get("patch_s")),
                     _f(r.get("model_s")), _f(r.get("first_step_s"), "{:.2f}"),
                     _f(r.get("second_step_s"), "{:.3f}"), _f(compiles, "{:d}"),
                     _f(jit.get("compile_seconds"))])
    widths = [max(len(str(x[i])) for x in [cols, *rows]) for i in range(len(cols))]
    line = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    out = ["Cold start: seconds from a fresh process to the end of the first training step",
           line(cols), line(["-" * w for w in widths]), *map(line, rows)]
    for r in results.values():
        if r.get("error"):
            out.append(f"{r['label']} failed: {r['error']}")
    out.append(f"ligerd's own share of the cold start: NVRTC {_f(share['jit_compile_s'])} s in the first step "
               f"({_f(share['jit_compiles'] if share['jit_compiles'] is not None else share['entries_added'], '{:d}')}"
               f" variants); cold first step - warm first step {_f(share['cold_minus_warm_first_step_s'])} s; "
               f"to the first step's end, ligerd cold - HF {_f(share['cold_minus_hf_to_first_step_s'])} s "
               "(goal: under 5 s of ligerd's own)")
    return "\n".join(out)


def result_rows(results: Dict[str, Dict], model: str, batch: int, seq: int, dtype: str) -> List[Dict]:
    """Rows for the results file: op "cold_start", impl the phase, pass "first_step" (ms: to the
    first step's end) or "precompile" (ms: the binary's wall time); failures are rows saying so."""
    name = {"1b": "llama-3.2-1b"}.get(model, model)
    out = []
    for r in results.values():
        pre = r["phase"] == "precompile"
        base = {"op": "cold_start", "impl": "ligerd" if pre else r["phase"], "dtype": dtype, "sol_kind": "",
                "shape": r["label"].split(" ", 1)[1] if pre else f"{name} B={batch} S={seq}",
                "pass": "precompile" if pre else "first_step"}
        if r.get("error"):
            out.append(dict(base, note=f"failed: {r['error']}"))
            continue
        if pre:
            out.append(dict(base, ms=r["wall_s"] * 1e3,
                            note=f"{r.get('variants')} variants, {r.get('compiled')} compiled on "
                                 f"{r.get('threads')} threads"))
            continue
        jit = r.get("jit") or {}
        parts = [f"imports {_f(r.get('imports_s'))} s", f"patch {_f(r.get('patch_s'))} s",
                 f"model {_f(r.get('model_s'))} s", f"first step {_f(r.get('first_step_s'), '{:.2f}')} s",
                 f"second step {_f(r.get('second_step_s'), '{:.3f}')} s"]
        if jit:
            parts.append(f"JIT: {jit.get('compiles', 0):.0f} compiles, {jit.get('compile_seconds', 0):.1f} s NVRTC, "
                         f"{jit.get('disk_hits', 0):.0f} disk hits")
        elif r.get("entries_added") is not None:
            parts.append(f"{r['entries_added']} cache entries added")
        out.append(dict(base, ms=r["to_first_step_s"] * 1e3 if r.get("to_first_step_s") is not None else None,
                        note="; ".join(parts)))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_llama = _load_e2e().train_llama
    problem = train_llama.gpu_problem(args.device)
    results: Dict[str, Dict] = {}
    arch = args.arch or (gpu_arch() if args.device == "cuda" else None)
    tmp = Path(tempfile.mkdtemp(prefix="ligerd-cold-start-"))
    pre_dir = None
    if args.ligerd_bin and arch:  # NVRTC only: runs without a GPU too
        pre_dir = str(tmp / "precompiled")
        print(f"== ligerd --precompile_arch={arch} into an empty {pre_dir}", flush=True)
        results["precompile"] = run_precompile(args.ligerd_bin, arch, pre_dir, args.timeout)
    if problem:
        if not args.keep_cache:
            shutil.rmtree(tmp, ignore_errors=True)
        if results:
            print(format_report(results, ligerd_share(results)))
        print(f"cold_start: cannot run the training phases: {problem}; a CUDA GPU is needed.", file=sys.stderr)
        return NO_GPU_EXIT
    fresh = str(tmp / "fresh")  # the "fresh node": nothing in it until ligerd-cold compiles
    for phase in args.phases:
        cache = {"ligerd-cold": fresh, "ligerd-warm": fresh, "ligerd-precompiled": pre_dir}.get(phase)
        if phase == "ligerd-warm" and "ligerd-cold" not in results:
            results[phase] = {"phase": phase, "label": PHASES[phase]["label"],
                              "error": "needs ligerd-cold first (it fills the cache)"}
            continue
        results[phase] = run_phase(args, phase, cache, out)
    if args.keep_cache:
        print(f"cold_start: JIT cache directories kept under {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    share = ligerd_share(results)
    print()
    print(format_report(results, share))
    (out / "cold_start.json").write_text(json.dumps({"results": results, "share": share, "args": {
        "batch": args.batch, "seq": args.seq, "model": args.model, "arch": arch}}, indent=2, default=str))
    print(f"wrote {out / 'cold_start.json'}")
    if args.results != "none":
        rf = _results_file()
        import torch
        gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
        rf.record(result_rows(results, args.model, args.batch, args.seq,
                              "bfloat16" if args.device == "cuda" else "float32"),
                  rf.run_metadata({}, gpu=gpu, torch=torch.__version__), path=args.results, note=args.note)
    return 1 if any(r.get("error") for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
