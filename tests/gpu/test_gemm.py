"""The daemon's cuBLASLt GEMM (kernels/ops/gemm.cc) on the GPU, local dispatch: against a float64
reference on fresh random inputs, for every layout the fused linear losses use (row-major and
transposed views of A and B, padded rows), in-place accumulation (C = D, beta = 1), fp32 output
from 16-bit inputs, the bias epilogue, odd and degenerate shapes; outputs poisoned with NaN so an
unwritten element fails. Remote dispatch of it is covered by tests/gpu/test_remote_dispatch.py.

Tolerance (why): norm-wise, ||got - ref|| / ||ref|| <= 2x torch.matmul's own error in the same
dtype against the same float64 reference, plus a floor of one output ulp (fp32 2^-23 times a
sqrt(K) growth of the fp32 sum, bf16 2^-8, fp16 2^-11): both accumulate in fp32 and round once to
the output dtype, so they differ only in summation order. fp32 runs with TF32 off (as cuBLASLt's
CUBLAS_COMPUTE_32F).
"""

from __future__ import annotations

import math

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

from ligerd._errors import LigerdError  # noqa: E402
from ligerd.ops.gemm import gemm_  # noqa: E402

from ligerd.testing.gpu import DEV, DTYPES, param_id as _id, rel_err  # noqa: E402

pytestmark = pytest.mark.usefixtures("local_dispatch", "no_tf32")  # conftest.py

ULP = {torch.float32: 2.0 ** -23, torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}
# (M, K, N): degenerate, odd, a logits chunk at a small vocab, FLCE's dW GEMM (inner dim = chunk).
SHAPES = [(1, 1, 1), (7, 13, 5), (37, 5120, 1), (1, 2880, 151), (64, 4095, 2880), (640, 1024, 32000),
          (2048, 640, 1024)]


def check(got, ref64, torch_same_dtype, K, what):
    assert not torch.isnan(got).any(), f"{what}: NaN in the output (unwritten or poisoned)"
    floor = ULP[got.dtype] * (math.sqrt(K) if got.dtype == torch.float32 else 1.0)
    bound = 2.0 * rel_err(torch_same_dtype, ref64) + floor
    err = rel_err(got, ref64)
    assert err <= bound, f"{what}: relative error {err:.3e} > {bound:.3e}"


def operand(rows, cols, dtype, layout, g):
    """A [rows, cols] operand: 'row' (contiguous), 't' (a transposed view), 'pad' (rows padded)."""
    if layout == "t":
        return torch.randn(cols, rows, device=DEV, generator=g).to(dtype).t()
    if layout == "pad":
        return torch.randn(rows, cols + 8, device=DEV, generator=g).to(dtype)[:, :cols]
    return torch.randn(rows, cols, device=DEV, generator=g).to(dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("layout", ["row.row", "row.t", "t.row", "pad.t"])
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_gemm_matches_float64(dtype, layout, shape):
    M, K, N = shape
    g = torch.Generator(device=DEV).manual_seed(hash((str(dtype), layout, shape)) & 0xFFFF)
    la, lb = layout.split(".")
    a = operand(M, K, dtype, la, g)
    b = operand(K, N, dtype, lb, g)
    out = torch.full((M, N), float("nan"), device=DEV, dtype=dtype)
    gemm_(out, a, b)
    ref = a.double() @ b.double()
    check(out, ref, a @ b, K, f"{dtype} {layout} {shape}")


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_bias_epilogue_and_alpha(dtype):
    g = torch.Generator(device=DEV).manual_seed(11)
    M, K, N = 77, 256, 1001
    a, b = operand(M, K, dtype, "row", g), operand(K, N, dtype, "t", g)
    bias = torch.randn(N, device=DEV, generator=g).to(dtype)
    out = torch.full((M, N), float("nan"), device=DEV, dtype=dtype)
    gemm_(out, a, b, bias=bias, alpha=0.5)
    ref = 0.5 * (a.double() @ b.double()) + bias.double()
    check(out, ref, torch.addmm(bias, a, b, alpha=0.5), K, f"{dtype} bias")


@pytest.mark.parametrize("out_dtype", [None, torch.float32], ids=["same", "fp32"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=_id)
def test_accumulate_in_place_over_chunks(dtype, out_dtype):
    """dW += dlogits_c^T @ x_c over chunks, as the fused loss does (the first chunk writes)."""
    g = torch.Generator(device=DEV).manual_seed(5)
    tokens, V, H, chunk = 1000, 3000, 512, 384
    dl = torch.randn(tokens, V, device=DEV, generator=g).to(dtype)
    x = torch.randn(tokens, H, device=DEV, generator=g).to(dtype)
    dW = torch.full((V, H), float("nan"), device=DEV, dtype=out_dtype or dtype)
    for s in range(0, tokens, chunk):
        gemm_(dW, dl[s:s + chunk].t(), x[s:s + chunk], accumulate=s > 0)
    ref = dl.double().t() @ x.double()
    same = torch.zeros((V, H), device=DEV, dtype=out_dtype or dtype)
    for s in range(0, tokens, chunk):  # torch's own chunked accumulation in the same dtypes
        same += (dl[s:s + chunk].t() @ x[s:s + chunk]).to(same.dtype)
    check(dW, ref, same, chunk, f"{dtype} -> {out_dtype} accumulate")


def test_bad_input_is_an_error_naming_gemm_and_leaves_the_output():
    a = torch.randn(4, 8, device=DEV)
    out = torch.full((4, 5), 3.0, device=DEV)
    with pytest.raises(LigerdError, match=r"gemm: .*do not multiply"):
        gemm_(out, a, torch.randn(7, 5, device=DEV))
    with pytest.raises(LigerdError, match=r"gemm: .*B is"):
        gemm_(out, a, torch.randn(8, 5, device=DEV).half())
    with pytest.raises(LigerdError, match=r"gemm: .*unit stride"):
        gemm_(out, a, torch.randn(16, 10, device=DEV)[::2, ::2])
    torch.cuda.synchronize()
    assert bool((out == 3.0).all()), "a refused call wrote its output"
