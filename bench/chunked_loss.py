#!/usr/bin/env python3
"""Chunked alignment / RL / distillation losses benchmark (standalone): forward + backward (input
and weight gradients) of each loss of ligerd.chunked_loss (and the transformers-level fused linear
JSD), against Liger-Kernel 0.8.5's same class (compiled=True, its default), torch.compile of the
unfused loss (the float64 reference functions of ligerd.testing.reference.chunked_loss run on bf16
inputs: bf16 GEMM, fp32 softmax and loss, as HF/TRL code does) and the same eager.

Default shape: 8192 tokens (8 sequences of 1024; 4 chosen/rejected pairs for the preference
losses), hidden 4096, vocab 128256, bf16; the reference-model losses (DPO, KTO) also run the
reference head, GRPO takes reference log-probs, the distillation losses a teacher head of the same
size. Columns: ms (median, from an idle GPU), % of the bf16 GEMM rate measured in the same run
(the minimal GEMM work: 6*M*D*V for the policy head, + 2*M*D*V per extra head; see docs/
chunked_loss.md for when ligerd recomputes logits), peak memory beyond the inputs and their
gradients (MiB, and % of one head's full logits M*V*2 bytes).

    python3 bench/chunked_loss.py --out out/bench             # every loss, every impl
    python3 bench/chunked_loss.py --losses dpo grpo --impls ligerd liger
Writes chunked_loss.csv in --out, prints the table and appends rows (op "chunked_<loss>", pass
"full") to bench/results.csv (--results; 'none' to skip).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

from flce import gemm_tflops, time_ms  # noqa: E402
from ligerd_bench import common, results  # noqa: E402

LOSSES = ["dpo", "orpo", "cpo", "simpo", "kto", "grpo", "jsd", "cosine", "fused_linear_jsd", "selected_log_probs"]
IMPLS = ["ligerd", "liger", "torch.compile", "eager"]
LIGER_CLASS = {"dpo": "LigerFusedLinearDPOLoss", "orpo": "LigerFusedLinearORPOLoss", "cpo": "LigerFusedLinearCPOLoss",
               "simpo": "LigerFusedLinearSimPOLoss", "kto": "LigerFusedLinearKTOLoss",
               "grpo": "LigerFusedLinearGRPOLoss", "jsd": "LigerFusedLinearJSDLoss",
               "cosine": "LigerFusedLinearCosineSimilarityLoss", "fused_linear_jsd": "LigerFusedLinearJSD"}


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "out"), "bench"))
    ap.add_argument("--B", type=int, default=8, help="sequences (preference: chosen + rejected)")
    ap.add_argument("--T", type=int, default=1024)
    ap.add_argument("--D", type=int, default=4096)
    ap.add_argument("--V", type=int, default=128256)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--losses", nargs="+", default=LOSSES, choices=LOSSES)
    ap.add_argument("--impls", nargs="+", default=IMPLS, choices=IMPLS)
    ap.add_argument("--chunks", nargs="*", type=int, default=[],
                    help="also time ligerd with LIGERD_CHUNKED_LOSS_CHUNK set to each of these (tokens): "
                         "rows 'ligerd@<tokens>' (e.g. 2048: one DPO pair per chunk, no logits recompute)")
    ap.add_argument("--results", default=None)
    ap.add_argument("--note", default="")
    return ap.parse_args()


def build(loss, B, T, D, V):
    """(tensors requiring grad, {impl: fn(*tensors) -> loss tensor}, GEMM FLOPs of the minimal work)."""
    from ligerd import chunked_loss as CL
    from ligerd.testing.reference import chunked_loss as R
    from ligerd.transformers import LigerFusedLinearJSD
    g = torch.Generator(device="cuda").manual_seed(0)
    M = B * T
    bf = torch.bfloat16

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, device="cuda", generator=g) * scale).to(bf)

    x = rnd(B, T, D, scale=0.5).requires_grad_()
    W = rnd(V, D, scale=D ** -0.5).requires_grad_()
    y = torch.randint(0, V, (B, T), device="cuda", generator=g)
    y[:, :T // 8] = -100
    head = 2 * M * D * V
    liger = {}
    if loss in ("dpo", "orpo", "cpo", "simpo"):
        rx, rW = rnd(B, T, D, scale=0.5), rnd(V, D, scale=D ** -0.5)
        ref = loss == "dpo"
        ours = getattr(CL, LIGER_CLASS[loss])()
        kw = dict(compute_nll_loss=ours.compute_nll_loss, average_log_prob=loss in ("orpo", "simpo"))

        def unfused(x_, W_):
            return R.preference(loss, x_, W_, y, None, ref=(rx, rW, None) if ref else None, **kw)[0]

        impls = {"ligerd": lambda x_, W_: ours(W_, x_, y, None, rx, rW)[0] if ref else ours(W_, x_, y)[0]}
        liger["fn"] = lambda m: (lambda x_, W_: m(W_, x_, y, None, rx, rW)[0] if ref else m(W_, x_, y)[0])
        flops = 3 * head + (head if ref else 0)
    elif loss == "kto":
        rx, rW = rnd(B, T, D, scale=0.5), rnd(V, D, scale=D ** -0.5)
        labels = torch.arange(B, device="cuda") % 2 == 0
        ours = CL.LigerFusedLinearKTOLoss(use_ref_model=True)

        def unfused(x_, W_):
            return R.kto(x_, W_, y, labels, None, ref=(rx, rW, None))[0]

        impls = {"ligerd": lambda x_, W_: ours(x_, W_, y, None, labels, rx, rW)[0]}
        liger["kw"] = dict(use_ref_model=True)
        liger["fn"] = lambda m: (lambda x_, W_: m(x_, W_, y, None, labels, rx, rW)[0])
        flops = 4 * head
    elif loss == "grpo":
        ids = torch.randint(0, V, (B, T), device="cuda", generator=g)
        mask = (y != -100).long()
        adv = torch.randn(B, device="cuda", generator=g)
        ref_lp = -torch.rand(B, T, device="cuda", generator=g) - 11
        ours = CL.LigerFusedLinearGRPOLoss()

        def unfused(x_, W_):
            return R.grpo(x_, W_, ids, mask, adv, None, ref_logps=ref_lp)[0]

        impls = {"ligerd": lambda x_, W_: ours(x_, W_, ids, mask, adv, None, ref_lp)[0]}
        liger["fn"] = lambda m: (lambda x_, W_: m(x_, W_, ids, mask, adv, None, ref_lp)[0])
        flops = 3 * head
    elif loss in ("jsd", "cosine", "fused_linear_jsd"):
        x = x.detach().view(M, D).requires_grad_()
        tx, tW = rnd(M, D, scale=0.5), rnd(V, D, scale=D ** -0.5)
        yy = y.view(-1)
        if loss == "fused_linear_jsd":
            ours = LigerFusedLinearJSD()

            def unfused(x_, W_):
                return R.fused_linear_jsd(x_, W_, tx, tW, yy)

            impls = {"ligerd": lambda x_, W_: ours(x_, W_, tx, tW, yy)}
            liger["module"] = "liger_kernel.transformers"
            liger["fn"] = lambda m: (lambda x_, W_: m(x_, W_, tx, tW, yy))
        else:
            ours = getattr(CL, LIGER_CLASS[loss])()

            def unfused(x_, W_):
                return R.distillation(loss, x_, W_, tx, tW, yy)[0]

            impls = {"ligerd": lambda x_, W_: ours(x_, W_, tx, tW, yy)}
            liger["fn"] = lambda m: (lambda x_, W_: m(x_, W_, tx, tW, yy))
        flops = 4 * head
    else:  # selected_log_probs
        ids = torch.randint(0, V, (B, T), device="cuda", generator=g)

        def unfused(x_, W_):
            return R.token_logps(x_, W_, None, ids)[0].sum()

        impls = {"ligerd": lambda x_, W_: CL.fused_linear_selected_log_probs(x_, W_, ids).sum()}
        flops = 4 * head   # forward logits, and the backward's recomputed logits + dx + dW
    impls["eager"] = unfused
    impls["torch.compile"] = torch.compile(unfused)
    if "fn" in liger:
        def make_liger():
            common.add_peer_site()
            import importlib
            cls = getattr(importlib.import_module(liger.get("module", "liger_kernel.chunked_loss")), LIGER_CLASS[loss])
            return liger["fn"](cls(**liger.get("kw", {})))
        impls["liger"] = make_liger
    return (x, W), impls, flops


def with_chunk(fn, chunk):
    """fn with LIGERD_CHUNKED_LOSS_CHUNK set to chunk (tokens) while it runs (the backward only
    scales saved gradients: the chunk matters in the forward)."""
    def run(*a):
        saved = os.environ.get("LIGERD_CHUNKED_LOSS_CHUNK")
        os.environ["LIGERD_CHUNKED_LOSS_CHUNK"] = chunk
        try:
            return fn(*a)
        finally:
            if saved is None:
                os.environ.pop("LIGERD_CHUNKED_LOSS_CHUNK")
            else:
                os.environ["LIGERD_CHUNKED_LOSS_CHUNK"] = saved
    return run


def main():
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gemm = gemm_tflops(8192, 8192, 8192)
    B, T, D, V = args.B, args.T, args.D, args.V
    M = B * T
    logits_bytes = M * V * 2
    rows, res_rows = [], []
    meta = results.run_metadata(common.environment())
    for loss in args.losses:
        tensors, impls, flops = build(loss, B, T, D, V)
        grads_bytes = sum(t.numel() * t.element_size() for t in tensors)
        names = list(args.impls)
        if "ligerd" in names:
            at = names.index("ligerd") + 1
            names[at:at] = [f"ligerd@{c}" for c in args.chunks]
        for name in names:
            row = {"loss": loss, "impl": name, "M": M, "D": D, "V": V}
            chunk = name.partition("@")[2]
            if chunk:
                impls[name] = with_chunk(impls["ligerd"], chunk)
            if name not in impls:
                row.update(ms=float("nan"), note="no such implementation in this peer")
                rows.append(row)
                continue
            try:
                fn = impls[name]() if name == "liger" else impls[name]

                def step():
                    return torch.autograd.grad(fn(*tensors), list(tensors))

                step()
                torch.cuda.synchronize()
                gc.collect()
                torch.cuda.empty_cache()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                gr = step()
                torch.cuda.synchronize()
                extra = torch.cuda.max_memory_allocated() - base - grads_bytes
                del gr
                ms = time_ms(step, args.reps)
                row.update(ms=round(ms, 3), pct_gemm=round(100 * flops / (ms * 1e-3) / (gemm * 1e12), 1),
                           peak_extra_MiB=round(extra / 2**20, 1), pct_logits=round(100 * extra / logits_bytes, 1))
            except Exception as e:  # noqa: BLE001: a peer that fails is a row saying so
                msg = str(e).splitlines()[0][:150] if str(e) else ""
                row.update(ms=float("nan"), note=f"{type(e).__name__}: {msg}")
            rows.append(row)
            print(f"[chunked_loss] {loss:>18} {name:>13}: {row.get('ms')} ms, {row.get('pct_gemm')}% of GEMM, "
                  f"peak +{row.get('peak_extra_MiB')} MiB ({row.get('pct_logits')}% of logits) {row.get('note', '')}")
            gc.collect()
            torch.cuda.empty_cache()
            base_row = {"op": f"chunked_{loss}", "impl": name, "shape": f"B={B} T={T} D={D} V={V}",
                        "dtype": "bfloat16", "pass": "full", "sol_kind": "gemm"}
            if row["ms"] == row["ms"]:
                res_rows.append(dict(base_row, ms=row["ms"], TFps=flops / (row["ms"] * 1e-3) / 1e12,
                                     pct_sol=row["pct_gemm"], peak_extra_MiB=row["peak_extra_MiB"],
                                     note=f"peak beyond inputs and grads ({row['pct_logits']}% of the logits)"))
            else:
                res_rows.append(dict(base_row, note=f"failed: {row.get('note', '')}"))
        del tensors, impls
        gc.collect()
        torch.cuda.empty_cache()
        if args.results != "none":  # per loss, so that a run cut short keeps what it measured
            results.record(res_rows, meta, path=args.results, note=args.note)
            res_rows = []
    cols = ["loss", "impl", "M", "D", "V", "ms", "pct_gemm", "peak_extra_MiB", "pct_logits", "note"]
    common.write_csv(out / "chunked_loss.csv", rows, cols)
    print(common.format_table(rows, cols))


if __name__ == "__main__":
    main()
