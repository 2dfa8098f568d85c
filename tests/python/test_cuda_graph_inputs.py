"""ligerd.testing.cuda_graph.static_forward_inputs, on the installed transformers: a patched tiny
Llama's forward given the mask and position ids built before a capture builds no mask itself (no
mask builder and no packed-sequence check runs: the host work a CUDA graph capture cannot take,
e.g. transformers 5.17's eager mask copying a CPU scalar to the GPU), and computes exactly the
loss and gradients of the forward that builds them; and, with torch told a capture is under way
(so transformers and ligerd take their capture paths), its forward and backward do nothing on
the host that a capture refuses, as far as the CPU can show it: no value read back
(``aten._local_scalar_dense``: .item(), bool()) and no tensor made from host data
(``aten.lift_fresh``: torch.tensor(...), on a GPU a copy from pageable memory). The capture
itself needs a GPU: tests/gpu/test_compile.py::test_manual_cuda_graph_training_step."""

from __future__ import annotations

import traceback

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from transformers import masking_utils  # noqa: E402

import ligerd.transformers as lt  # noqa: E402
from ligerd import _backend, _telemetry  # noqa: E402
from ligerd.testing import convergence as cv  # noqa: E402
from ligerd.testing import ref_executor  # noqa: E402
from ligerd.testing.cuda_graph import static_forward_inputs  # noqa: E402

SIZES = dict(hidden=64, layers=2, vocab=256, heads=4, kv_heads=2, intermediate=96)


@pytest.fixture
def model(monkeypatch):
    ref_executor.install(monkeypatch)
    lt.revert_liger_kernel_patches()
    lt.apply_liger_kernel_to_llama()
    m = cv.build(cv.mini_config("llama", **SIZES), torch.float32, "cpu")
    m.train()
    yield m
    lt.revert_liger_kernel_patches()


def _batch(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, SIZES["vocab"], (3, 13), generator=g)
    y = x.clone()
    y[:, :2] = -100
    return x, y


def _step(model, x, y, **kw):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=x, labels=y, use_cache=False, **kw).loss
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


def _no_mask_building(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the forward built an attention mask (host work inside a capture)")
    for name in list(masking_utils.ALL_MASK_ATTENTION_FUNCTIONS._global_mapping):
        monkeypatch.setitem(masking_utils.ALL_MASK_ATTENTION_FUNCTIONS._global_mapping, name, boom)
    monkeypatch.setattr(masking_utils, "find_packed_sequence_indices", boom)


def test_forward_given_static_inputs_builds_no_mask_and_matches(model, monkeypatch):
    batches = [_batch(int(torch.randint(0, 2**31 - 1, ()))), _batch(7)]
    refs = [_step(model, x, y) for x, y in batches]
    x0 = batches[0][0]
    kw = static_forward_inputs(model, x0)
    assert kw["attention_mask"].shape == (3, 1, 13, 13) and kw["position_ids"].shape == (1, 13)
    _no_mask_building(monkeypatch)
    with pytest.raises(AssertionError, match="built an attention mask"):  # the probe works
        model(input_ids=x0, labels=batches[0][1], use_cache=False)
    # Each batch with the same static tensors (as graph replays reuse them): the same mask values
    # and positions, so the same computation, bit for bit on the CPU.
    for (x, y), (ref_loss, ref_grads) in zip(batches, refs):
        loss, grads = _step(model, x, y, **kw)
        assert torch.equal(loss, ref_loss), (loss, ref_loss)
        for k, g in ref_grads.items():
            assert torch.equal(grads[k], g), k


def test_static_inputs_need_a_materialised_mask(model):
    model.config._attn_implementation = "sdpa"  # no padding: transformers builds no mask for sdpa
    x, _ = _batch(3)
    with pytest.raises(ValueError, match="no 4-D mask for attention implementation 'sdpa'"):
        static_forward_inputs(model, x)
    with pytest.raises(ValueError, match=r"must be \[batch, seq\]"):
        static_forward_inputs(model, x[0])


class _HostWork(TorchDispatchMode):
    """Records the ops a CUDA graph capture refuses that the CPU can show: a value read back to the
    host and a tensor made from host data, each with the innermost caller outside torch. Ops run
    by the reference executor (ligerd's kernels on a GPU) are not recorded: pause()."""
    REFUSED = ("aten._local_scalar_dense.default", "aten.lift_fresh.default")

    def __init__(self):
        super().__init__()
        self.seen, self.paused = [], False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.paused and str(func) in self.REFUSED:
            frames = [f for f in traceback.extract_stack()[:-1] if "/torch/" not in f.filename]
            where = f"{frames[-1].filename}:{frames[-1].lineno} {frames[-1].name}" if frames else "?"
            self.seen.append(f"{func} at {where}")
        return func(*args, **(kwargs or {}))


@pytest.fixture
def fake_capture(model, monkeypatch):
    """(model, recorder): torch.cuda.is_current_stream_capturing() says True, telemetry is off (its
    CPU-tensor branch reads the loss back; on a GPU it skips captured calls), and the reference
    executor's own ops are not recorded."""
    monkeypatch.setenv("LIGERD_TELEMETRY", "0")
    monkeypatch.setattr(_telemetry, "reporter", None)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    rec = _HostWork()
    inner = _backend._test_launcher

    def launch(op, tensors, scalars):
        rec.paused = True
        try:
            inner(op, tensors, scalars)
        finally:
            rec.paused = False
    monkeypatch.setattr(_backend, "_test_launcher", launch)
    return model, rec


def test_the_host_work_probe_sees_what_a_capture_refuses(fake_capture):
    _, rec = fake_capture
    with rec:
        t = torch.tensor(0.5)
        float(t.sum())
    assert [s.split(" at ")[0] for s in rec.seen] == ["aten.lift_fresh.default", "aten._local_scalar_dense.default"]


def test_captured_forward_and_backward_do_no_host_work_given_static_inputs(fake_capture):
    model, rec = fake_capture
    x, y = _batch(11)
    kw = static_forward_inputs(model, x)  # before the capture
    with rec:
        model(input_ids=x, labels=y, use_cache=False, **kw).loss.backward()
    assert rec.seen == [], "host work inside the (fake) capture:\n" + "\n".join(rec.seen)
    if transformers.__version__.startswith("5.17."):
        # what the H100 run hit: without them, 5.17's eager mask makes a tensor from a CPU scalar
        with rec:
            model(input_ids=x, labels=y, use_cache=False).loss.backward()
        assert any("lift_fresh" in s and "eager_mask" in s for s in rec.seen), rec.seen
