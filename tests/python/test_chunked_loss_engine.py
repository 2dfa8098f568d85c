"""The chunk loop of ligerd.chunked_loss (_engine): the chunk rule (a memory budget, not a
constant), how row segments are cut, and that the losses run on the executor's ops only (gemm and
the cross-entropy kernels: local and remote dispatch then both work), on the CPU reference
executor."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

from ligerd import OpInputError  # noqa: E402
from ligerd.chunked_loss import LigerFusedLinearDPOLoss, LigerFusedLinearGRPOLoss  # noqa: E402
from ligerd.chunked_loss import _engine as E  # noqa: E402
from ligerd.testing import ref_executor  # noqa: E402


@pytest.mark.parametrize("bt,v,elem", [(8192, 128256, 2), (16384, 151936, 2), (4096, 32000, 4), (100, 262144, 2),
                                       (1 << 20, 262144, 2)])
def test_chunk_rule_keeps_the_buffer_within_the_budget(bt, v, elem):
    c = E.chunk_rows("t", bt, v, elem)
    assert 1 <= c <= bt
    if c < bt:
        assert c % E.CHUNK_ALIGN == 0
    if c > E.CHUNK_ALIGN:   # above the 128-row floor the buffer is within 9.5% and 512 MiB
        assert c * v * elem <= E.BUDGET_SHARE * bt * v * elem + 1
        assert c * v * elem <= E.BUDGET_MAX_BYTES
    # a larger working set per row gives fewer rows
    assert E.chunk_rows("t", bt, v, elem, row_bytes=v * elem * 10) <= c


def test_chunk_override_and_its_errors(monkeypatch):
    monkeypatch.setenv("LIGERD_CHUNKED_LOSS_CHUNK", "7")
    assert E.chunk_rows("t", 100, 50, 2) == 7
    assert E.chunk_rows("t", 5, 50, 2) == 5
    for bad in ("0", "-3", "x"):
        monkeypatch.setenv("LIGERD_CHUNKED_LOSS_CHUNK", bad)
        with pytest.raises(OpInputError, match="LIGERD_CHUNKED_LOSS_CHUNK"):
            E.chunk_rows("t", 100, 50, 2)


def test_split_segments_cuts_in_order_without_overlap():
    segs = [(0, 10), (40, 43), (50, 61)]
    pieces = E.split_segments(segs, 4)
    assert all(sum(b - a for a, b in p) <= 4 for p in pieces)
    rows = [r for p in pieces for a, b in p for r in range(a, b)]
    assert rows == [r for a, b in segs for r in range(a, b)]
    assert E.split_segments([], 4) == []


def test_losses_run_on_the_executor_ops_only(monkeypatch):
    launcher = ref_executor.install(monkeypatch)
    monkeypatch.setenv("LIGERD_CHUNKED_LOSS_CHUNK", "8")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 9, 16, generator=g, requires_grad=True)
    W = torch.randn(37, 16, generator=g, requires_grad=True)
    y = torch.randint(0, 37, (4, 9), generator=g)
    LigerFusedLinearDPOLoss(use_ref_model=False)(W, x, y)[0].backward()
    LigerFusedLinearGRPOLoss(use_ref_model=False)(x, W, y, torch.ones(4, 9), torch.randn(4, generator=g))[0].backward()
    ops = {c[0] for c in launcher.calls}
    assert ops <= {"gemm", "cross_entropy_count", "cross_entropy_fwd", "cross_entropy_scale"}
    assert {"gemm", "cross_entropy_fwd"} <= ops
    # every logits GEMM writes at most one chunk of rows
    assert max(c[1][3][0][0] for c in launcher.calls if c[0] == "gemm" and c[1][3][0][1] == 37) <= 8


def test_cuda_is_required_outside_the_tests():
    x, W, y = torch.randn(2, 3, 4), torch.randn(5, 4), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(OpInputError, match="CUDA"):
        LigerFusedLinearDPOLoss(use_ref_model=False)(W, x, y)


def test_under_torch_compile_the_loss_runs_eagerly(monkeypatch):
    """torch.compile around a chunked loss: the loss is a graph break (its chunk loop runs eagerly,
    torch.compiler.disable) and gives the eager values and gradients."""
    ref_executor.install(monkeypatch)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 9, 16, generator=g, requires_grad=True)
    W = torch.randn(37, 16, generator=g, requires_grad=True)
    y = torch.randint(0, 37, (4, 9), generator=g)
    mod = LigerFusedLinearDPOLoss(use_ref_model=False)

    def f(W_, x_):
        return mod(W_, x_, y)[0] * 2

    eager = f(W, x)
    ge = torch.autograd.grad(eager, [W, x])
    compiled = torch.compile(f)(W, x)
    gc = torch.autograd.grad(compiled, [W, x])
    assert torch.equal(eager, compiled)
    for a, b in zip(ge, gc):
        assert torch.equal(a, b)


def test_group_rule_takes_a_whole_pair_when_it_fits_a_quarter_of_the_logits(monkeypatch):
    monkeypatch.delenv("LIGERD_CHUNKED_LOSS_CHUNK", raising=False)
    V = 128256
    c = E.chunk_rows("t", 8192, V, 2)
    assert c == 768
    assert E.group_chunk_rows("t", 8192, V, 2, 2048) == 2048       # 4 pairs of 2 x 1024: 25%
    assert E.group_chunk_rows("t", 8192, V, 2, 512) == 768         # already fits the chunk
    assert E.group_chunk_rows("t", 4096, V, 2, 2048) == E.chunk_rows("t", 4096, V, 2)   # 50%: two passes
    assert E.group_chunk_rows("t", 65536, V, 2, 8192) == E.chunk_rows("t", 65536, V, 2)  # 2 GiB > 1 GiB
    monkeypatch.setenv("LIGERD_CHUNKED_LOSS_CHUNK", "100")
    assert E.group_chunk_rows("t", 8192, V, 2, 2048) == 100


def test_sub_blocks_of_the_torch_chunk_math():
    from ligerd.chunked_loss._distill_math import FP32_TEMPS
    V = 128256
    c = E.chunk_rows("t", 8192, V, 2, row_bytes=2 * V * 2)     # student + teacher buffers
    assert c == 384
    s = E.sub_rows(8192, V, 2, FP32_TEMPS * V, c)
    assert FP32_TEMPS == 16 and s == 97   # 9.5% of the bf16 logits / 16 bytes a vocab entry
    assert E.sub_rows(8192, V, 2, 48 * V, c) == E.SUB_MIN_ROWS   # 32 rows: the floor
    # fp32 temporaries are 24x a bf16 logit: 9.5% of the logits holds 0.4% of the tokens' math
    assert E.sub_rows(65536, 1000, 2, 48 * 1000, 512) == int(0.095 * 65536 * 1000 * 2 // 48000)
    assert E.sub_rows(10, 1000, 2, 48 * 1000, 7) == 7           # never more than the chunk
