"""The RoPE custom ops' plumbing on the CPU: in place vs out of place (and when each applies),
strided q/k read without copies, one launch for q and k, autograd (in-place backward into dq/dk),
missing and expanded gradients, torch.compile, cos/sin shapes, version-counter safety and the
friendly input errors. The executor is replaced by a float64 reference "launcher" honouring the
contract of kernels/ops/rope.cc; the kernels themselves are tested in tests/gpu/test_rope.py."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

import ligerd  # noqa: E402
from ligerd.ops.rope import LigerRopeFunction  # noqa: E402
from ligerd.transformers import liger_rotary_pos_emb  # noqa: E402
from ligerd.transformers.functional import liger_rope  # noqa: E402


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def hf_apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def cos_sin(bc, s, d, distinct_halves=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    if distinct_halves:  # arbitrary values: exercises the exact transpose in the backward
        return torch.randn(bc, s, d, generator=g), torch.randn(bc, s, d, generator=g)
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
    pos = torch.arange(s).float()[None, :].expand(bc, s) + torch.arange(bc)[:, None]
    f = pos[..., None] * inv
    emb = torch.cat([f, f], -1)
    return emb.cos(), emb.sin()


def hf_qk(b, hq, hk, s, d, seed=1):
    """Non-leaf q, k in HF's layout: transposed views of [b, s, h, d] projection outputs."""
    g = torch.Generator().manual_seed(seed)
    wq = torch.randn(b, s, hq * d, generator=g).requires_grad_()
    wk = torch.randn(b, s, hk * d, generator=g).requires_grad_()
    pq, pk = wq * 1, wk * 1  # "projection outputs"
    return wq, wk, pq.view(b, s, hq, d).transpose(1, 2), pk.view(b, s, hk, d).transpose(1, 2)


@pytest.mark.parametrize("shape", [(2, 4, 2, 5, 8), (1, 1, 1, 1, 2), (3, 5, 1, 7, 6)])
@pytest.mark.parametrize("cos_batch", ["one", "bsz"])
@pytest.mark.parametrize("distinct", [False, True], ids=["hf_cos", "random_cos"])
def test_hf_layout_in_place_forward_and_backward(launcher, shape, cos_batch, distinct):
    b, hq, hk, s, d = shape
    cos, sin = cos_sin(1 if cos_batch == "one" else b, s, d, distinct)
    wq, wk, q, k = hf_qk(b, hq, hk, s, d)
    wq2, wk2, q2, k2 = hf_qk(b, hq, hk, s, d)
    rq, rk = hf_apply_rotary_pos_emb(q2, k2, cos, sin)
    q_ptr, k_ptr = q.data_ptr(), k.data_ptr()
    oq, ok = liger_rotary_pos_emb(q, k, cos, sin)
    torch.testing.assert_close(oq, rq)
    torch.testing.assert_close(ok, rk)
    assert oq.data_ptr() == q_ptr and ok.data_ptr() == k_ptr, "rotated in place (Liger semantics)"
    torch.testing.assert_close(q, rq.detach()), "q itself holds the rotated values"
    (op, fts, _), = launcher.calls
    assert op == "rope_fwd"
    assert fts[0][1] == fts[4][1] == q_ptr and fts[1][1] == fts[5][1] == k_ptr, "one launch, in place"
    assert fts[0][2] == q.stride() and fts[0][2] != q.contiguous().stride() or s == 1 or hq == 1, \
        "the transposed view is passed as it is (no copy)"
    dq = torch.randn(b, s, hq, d).transpose(1, 2)  # a gradient in the same layout
    dk = torch.randn(b, s, hk, d).transpose(1, 2)
    dq_ptr = dq.data_ptr()
    torch.autograd.backward([rq, rk], [dq.clone(), dk.clone()])
    torch.autograd.backward([oq, ok], [dq, dk])
    torch.testing.assert_close(wq.grad, wq2.grad)
    torch.testing.assert_close(wk.grad, wk2.grad)
    op, bts, _ = launcher.calls[1]
    assert op == "rope_bwd" and bts[0][1] == bts[4][1] == dq_ptr, "backward rotates dq in place"


def test_contiguous_layout_and_cos_shapes(launcher):
    b, hq, hk, s, d = 2, 3, 1, 4, 8
    cos, sin = cos_sin(b, s, d)
    q0, k0 = torch.randn(b, hq, s, d), torch.randn(b, hk, s, d)
    rq, rk = hf_apply_rotary_pos_emb(q0, k0, cos, sin)
    for c, sn in ((cos, sin), (cos.unsqueeze(1), sin.unsqueeze(1)), (cos[:1, :, :], sin[:1])):
        ref = (rq, rk) if c.shape[0] != 1 else hf_apply_rotary_pos_emb(q0, k0, c.reshape(1, s, d), sn.reshape(1, s, d))
        q, k = q0.clone(), k0.clone()
        oq, ok = liger_rotary_pos_emb(q, k, c, sn)  # no grad: in place
        torch.testing.assert_close(oq, ref[0])
        torch.testing.assert_close(ok, ref[1])
        assert oq.data_ptr() == q.data_ptr()
    q, k = q0.clone(), k0.clone()
    oq, _ = liger_rotary_pos_emb(q, k, cos[0], sin[0])  # 2-D (seq, hd)
    torch.testing.assert_close(oq, hf_apply_rotary_pos_emb(q0, k0, cos[:1], sin[:1])[0])
    # LigerRopeFunction.apply and liger_rope take (and ignore) position_ids and unsqueeze_dim.
    q, k = q0.clone(), k0.clone()
    oq, ok = LigerRopeFunction.apply(q, k, cos, sin, torch.arange(s)[None], 1)
    torch.testing.assert_close(ok, rk)
    q, k = q0.clone(), k0.clone()
    torch.testing.assert_close(liger_rope(q, k, cos, sin)[0], rq)


def test_fp32_cos_with_bf16_q(launcher):
    cos, sin = cos_sin(1, 3, 8)
    q = torch.randn(1, 2, 3, 8).bfloat16()
    k = torch.randn(1, 2, 3, 8).bfloat16()
    rq, _ = hf_apply_rotary_pos_emb(q.double(), k.double(), cos.double(), sin.double())
    oq, _ = liger_rotary_pos_emb(q.clone(), k.clone(), cos, sin)
    assert oq.dtype == torch.bfloat16
    torch.testing.assert_close(oq.double(), rq, rtol=2 ** -7, atol=1e-6)


def test_leaf_inputs_are_rotated_out_of_place(launcher):
    b, hq, hk, s, d = 2, 2, 1, 3, 4
    cos, sin = cos_sin(1, s, d)
    q = torch.randn(b, hq, s, d, requires_grad=True)
    k = torch.randn(b, hk, s, d, requires_grad=True)
    q_before = q.detach().clone()
    oq, ok = liger_rotary_pos_emb(q, k, cos, sin)
    assert torch.equal(q.detach(), q_before), "a leaf that requires grad is never written"
    assert oq.data_ptr() != q.data_ptr()
    q2, k2 = q.detach().clone().requires_grad_(), k.detach().clone().requires_grad_()
    rq, rk = hf_apply_rotary_pos_emb(q2, k2, cos, sin)
    torch.testing.assert_close(oq, rq)
    g = torch.randn_like(rq)
    (oq * g).sum().backward()
    (rq * g).sum().backward()
    torch.testing.assert_close(q.grad, q2.grad)
    assert k.grad is None or torch.count_nonzero(k.grad) == 0, "k's output was not used"
    # A view of such a leaf is treated the same way.
    base = torch.randn(b, s, hq * d, requires_grad=True)
    v = base.view(b, s, hq, d).transpose(1, 2)
    before = base.detach().clone()
    liger_rotary_pos_emb(v, k.detach().clone(), cos, sin)
    assert torch.equal(base.detach(), before)


def test_fused_qkv_slices_are_read_in_place_and_written_fresh(launcher):
    b, hq, hk, s, d = 2, 4, 2, 3, 8
    cos, sin = cos_sin(b, s, d)
    w = torch.randn(b, s, (hq + 2 * hk) * d, requires_grad=True)
    qkv = w * 1
    q = qkv[..., : hq * d].view(b, s, hq, d).transpose(1, 2)
    k = qkv[..., hq * d: (hq + hk) * d].view(b, s, hk, d).transpose(1, 2)
    before = qkv.detach().clone()
    oq, ok = liger_rotary_pos_emb(q, k, cos, sin)
    (_, fts, _), = launcher.calls
    assert fts[0][1] == q.data_ptr() and fts[1][1] == k.data_ptr(), "q, k read where they are"
    assert fts[4][1] != q.data_ptr(), "interleaved q and k: out of place"
    assert torch.equal(qkv.detach(), before)
    w2 = w.detach().clone().requires_grad_()
    qkv2 = w2 * 1
    rq, rk = hf_apply_rotary_pos_emb(qkv2[..., : hq * d].view(b, s, hq, d).transpose(1, 2),
                                     qkv2[..., hq * d: (hq + hk) * d].view(b, s, hk, d).transpose(1, 2), cos, sin)
    torch.testing.assert_close(oq, rq)
    (oq.square().sum() + ok.sum()).backward()
    (rq.square().sum() + rk.sum()).backward()
    torch.testing.assert_close(w.grad, w2.grad)


def test_missing_and_expanded_gradients(launcher):
    b, hq, hk, s, d = 2, 3, 1, 4, 6
    cos, sin = cos_sin(1, s, d, distinct_halves=True)
    wq, wk, q, k = hf_qk(b, hq, hk, s, d)
    wq2, wk2, q2, k2 = hf_qk(b, hq, hk, s, d)
    oq, ok = liger_rotary_pos_emb(q, k, cos, sin)
    rq, rk = hf_apply_rotary_pos_emb(q2, k2, cos, sin)
    oq.sum().backward()  # dk is None, dq is an expanded ones tensor (stride 0)
    rq.sum().backward()
    torch.testing.assert_close(wq.grad, wq2.grad)
    assert wk.grad is None
    op, bts, _ = launcher.calls[-1]
    assert op == "rope_bwd" and bts[1][0] == (b, 0, s, d), "a missing dk is skipped (0 heads)"
    assert bts[0][2][-1] == 1, "an expanded dq (stride 0 everywhere) is made contiguous first"


def test_no_grad_mutates_in_place(launcher):
    cos, sin = cos_sin(1, 3, 4)
    q, k = torch.randn(1, 2, 3, 4), torch.randn(1, 1, 3, 4)
    rq, rk = hf_apply_rotary_pos_emb(q, k, cos, sin)
    with torch.no_grad():
        oq, ok = liger_rotary_pos_emb(q, k, cos, sin)
    assert oq is q and ok is k
    torch.testing.assert_close(q, rq)


def test_saved_q_is_protected_by_the_version_counter(launcher):
    cos, sin = cos_sin(1, 3, 4)
    wq, wk, q, k = hf_qk(1, 2, 1, 3, 4)
    w = torch.randn(1, 2, 3, 4, requires_grad=True)
    z = (q * w).sum()  # saves q for the gradient of w
    oq, ok = liger_rotary_pos_emb(q, k, cos, sin)  # rotates q in place
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.backward()


def test_non_contiguous_last_dim_is_copied(launcher):
    cos, sin = cos_sin(1, 3, 4)
    q0 = torch.randn(1, 2, 3, 8)[..., ::2]
    k0 = torch.randn(1, 1, 3, 4)
    rq, _ = hf_apply_rotary_pos_emb(q0, k0, cos, sin)
    oq, _ = liger_rotary_pos_emb(q0, k0.clone(), cos, sin)
    torch.testing.assert_close(oq, rq)


def test_compile_fullgraph_is_out_of_place(launcher):
    torch._dynamo.reset()
    b, hq, hk, s, d = 2, 2, 1, 3, 8
    cos, sin = cos_sin(b, s, d)

    def f(xq, xk):
        q = (xq * 2).view(b, s, hq, d).transpose(1, 2)
        k = (xk * 2).view(b, s, hk, d).transpose(1, 2)
        oq, ok = liger_rotary_pos_emb(q, k, cos, sin)
        return oq * 3, ok

    xq = torch.randn(b, s, hq * d, requires_grad=True)
    xk = torch.randn(b, s, hk * d, requires_grad=True)
    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    yq, yk = cf(xq, xk)
    (yq.sum() + yk.square().sum()).backward()
    xq2, xk2 = xq.detach().clone().requires_grad_(), xk.detach().clone().requires_grad_()
    rq, rk = hf_apply_rotary_pos_emb((xq2 * 2).view(b, s, hq, d).transpose(1, 2),
                                     (xk2 * 2).view(b, s, hk, d).transpose(1, 2), cos, sin)
    ((rq * 3).sum() + rk.square().sum()).backward()
    torch.testing.assert_close(yq, rq * 3)
    torch.testing.assert_close(yk, rk)
    torch.testing.assert_close(xq.grad, xq2.grad)
    torch.testing.assert_close(xk.grad, xk2.grad)
    assert all(c[1][4][1] != c[1][0][1] for c in launcher.calls), "compiled: never in place"
    assert {c[0] for c in launcher.calls} == {"rope_fwd", "rope_bwd"}


@pytest.mark.parametrize("case", ["q3d", "kshape", "odd_hd", "dtype", "int", "cos_shape",
                                  "cos_dtype", "sin_vs_cos", "not_tensor", "fp64"])
def test_bad_inputs_name_the_op(launcher, case):
    q, k = torch.randn(2, 4, 3, 8), torch.randn(2, 2, 3, 8)
    cos, sin = torch.randn(1, 3, 8), torch.randn(1, 3, 8)
    msg = {"q3d": "q must be", "kshape": "k has shape", "odd_hd": "even", "dtype": "mixed dtypes",
           "int": "dtype", "cos_shape": "cos must have shape", "cos_dtype": "cos/sin have dtype",
           "sin_vs_cos": "mixed dtypes", "not_tensor": "must be a torch.Tensor", "fp64": "dtype"}[case]
    if case == "q3d":
        q = q[0]
    elif case == "kshape":
        k = torch.randn(2, 2, 4, 8)
    elif case == "odd_hd":
        q, k, cos, sin = q[..., :7], k[..., :7], cos[..., :7], sin[..., :7]
    elif case == "dtype":
        k = k.half()
    elif case == "int":
        q, k = q.int(), k.int()
    elif case == "cos_shape":
        cos, sin = torch.randn(3, 3, 8), torch.randn(3, 3, 8)
    elif case == "cos_dtype":
        q, k, cos, sin = q.half(), k.half(), cos.bfloat16(), sin.bfloat16()
    elif case == "sin_vs_cos":
        sin = sin.half()
    elif case == "not_tensor":
        cos = 1.0
    elif case == "fp64":
        q, k = q.double(), k.double()
    with pytest.raises(ligerd.OpInputError, match=msg) as ei:
        liger_rotary_pos_emb(q, k, cos, sin)
    assert "rope" in str(ei.value)


def test_cpu_tensors_are_refused_without_a_test_launcher():
    q, k = torch.randn(1, 1, 2, 4), torch.randn(1, 1, 2, 4)
    with pytest.raises(ligerd.OpInputError, match="rope: q must be a CUDA tensor"):
        liger_rotary_pos_emb(q, k, torch.randn(1, 2, 4), torch.randn(1, 2, 4))
