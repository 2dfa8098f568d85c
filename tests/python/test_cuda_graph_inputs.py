"""ligerd.testing.cuda_graph.static_forward_inputs, on the installed transformers: a patched tiny
Llama's forward given the mask and position ids built before a capture builds no mask itself (no
mask builder and no packed-sequence check runs: the host work a CUDA graph capture cannot take,
e.g. transformers 5.17's eager mask copying a CPU scalar to the GPU), and computes exactly the
loss and gradients of the forward that builds them. The capture itself needs a GPU:
tests/gpu/test_compile.py::test_manual_cuda_graph_training_step."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")

from transformers import masking_utils  # noqa: E402

import ligerd.transformers as lt  # noqa: E402
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
