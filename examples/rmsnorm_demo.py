"""The main job until the training demo lands (issue 5): RMSNorm through ligerd, checked and timed.

Runs LigerRMSNorm (from ligerd.transformers, Liger's API) forward and backward on a few
LLaMA-sized shapes, compares with PyTorch's float64 math, and times it against torch eager.
The client starts a private ligerd when none is running (LIGERD_AUTOSTART=0 turns that off) and
says which dispatch mode it uses and why.

    PYTHONPATH=build/release/python LIGERD_BIN=build/release/server/ligerd python3 examples/rmsnorm_demo.py
"""

import sys
import time

import torch


def reference(x, w, eps):
    x64 = x.double()
    return (x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + eps) * w.double())


def time_ms(fn, reps=50):
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps * 1e3


def main() -> int:
    if not torch.cuda.is_available():
        print("rmsnorm_demo: no CUDA GPU is visible to PyTorch; this demo needs one.", file=sys.stderr)
        return 2
    import ligerd
    from ligerd.transformers import LigerRMSNorm

    print(f"ligerd {ligerd.__version__} on {torch.cuda.get_device_name(0)}")
    eps = 1e-6
    for rows, hidden in [(4096, 2048), (16384, 4096), (8192, 8192)]:
        x = torch.randn(rows, hidden, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        norm = LigerRMSNorm(hidden, eps=eps).cuda().to(torch.bfloat16)
        with torch.no_grad():
            norm.weight.normal_(1.0, 0.1)
        y = norm(x)
        err = (y.double() - reference(x.detach(), norm.weight.detach(), eps)).abs().max().item()
        y.backward(torch.ones_like(y))
        torch.cuda.synchronize()
        ligerd_ms = time_ms(lambda: norm(x).sum().backward())
        eager = lambda: (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype).mul(norm.weight).sum().backward()
        eager_ms = time_ms(eager)
        ok = err < 0.05
        print(f"  {rows:6d} x {hidden:5d} bf16: max |y - ref| = {err:.4f} ({'ok' if ok else 'TOO LARGE'}); "
              f"fwd+bwd {ligerd_ms:.3f} ms vs torch eager {eager_ms:.3f} ms ({eager_ms / ligerd_ms:.1f}x)")
        if not ok:
            return 1
    info = getattr(ligerd, "dispatch_info", None)
    if callable(info):
        print(f"dispatch: {info()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
