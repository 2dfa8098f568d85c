"""Cross-entropy on the GPU through ligerd's local executor: exact against a float64 reference on
fresh random logits, outputs poisoned with NaN first.

Run by tests/gpu/run.sh (or: PYTHONPATH=<build>/python python3 -m pytest tests/gpu). Skips without
CUDA.

Tolerances (why):
- Per-row loss (fp32 out): the kernel sums exp over the row in fp32 (each thread sequentially over
  <= ~40 vectors, then a 10-level tree), with ex2.approx (relative error < 2^-22). The sum's
  relative error is then <= ~200 * 2^-24 = 1.2e-5, i.e. an absolute error of ~1.2e-5 in lse; the
  other terms are single fp32 roundings of values of magnitude |lse|, |z_y|, eps * sum |w z|. So
  |err| <= 2e-5 * factor + 1e-5 * scale, with scale the sum of |terms| and factor the row's
  reduction factor (1/n, w_y/sum w).
- Gradient: dx_j = A p_j + B w_j + C [j == y], p_j = 2^(...) / s: relative error of p_j up to that
  of s (1.2e-5) plus ex2's; then one rounding to the output dtype. |err| <= 2 u |ref| + 3e-5 *
  (|A p_j| + |B w_j| + |C| [j == y]) * chain + tiny, u the dtype's unit roundoff (fp32 2^-24,
  bf16 2^-8, fp16 2^-11), chain = 1 - t^2 (+1e-6 for tanhf's error) with softcap.
- Reduced losses through the Python API (x's dtype, as Liger): one more rounding, 2 u relative.
"""

from __future__ import annotations

import os
import sys

import pytest
from ligerd.testing.gpu import require_cuda

torch = require_cuda()

import torch.nn.functional as F  # noqa: E402

from ligerd import OpInputError, _backend  # noqa: E402
from ligerd.transformers import (CrossEntropyOutput, LigerCrossEntropyLoss,  # noqa: E402
                                 liger_cross_entropy)

from ligerd.testing.gpu import DEV, DTYPES, TINY, U, assert_close, liger_peer, param_id as _id  # noqa: E402

pytestmark = pytest.mark.usefixtures("local_dispatch")  # conftest.py

VOCABS = [32000, 50257, 128256, 151936]
RED = {"none": 0, "mean": 1, "sum": 2}
II = -100


def make(rows, V, dtype, seed, ignore=(), pitch=None):
    g = torch.Generator(device=DEV).manual_seed(seed)
    width = pitch or V
    big = (3 * torch.randn(rows, width, device=DEV, generator=g)).to(dtype)
    x = big[:, :V]
    t = torch.randint(0, V, (rows,), device=DEV, generator=g)
    for i in ignore:
        t[i] = II
    return x, t


def reference(x, t, weight=None, ls=0.0, lss=0.0, reduction="mean", softcap=0.0, row_scale=None,
              token_scaling=False):
    """float64: per-row loss, z-loss, gradient, their error scales, argmax."""
    xd = x.double()
    V = x.shape[1]
    if softcap > 0:
        th = torch.tanh(xd / softcap)
        z = softcap * th
        chain = 1 - th * th
    else:
        z, chain = xd, torch.ones_like(xd)
    lse = torch.logsumexp(z, 1)
    p = torch.softmax(z, 1)
    ignored = t == II
    ty = t.clamp(0, V - 1)
    w = weight.double() if weight is not None else torch.ones(V, dtype=torch.float64, device=DEV)
    W = w.sum()
    valid = ~ignored
    wy = w[ty]
    n = valid.sum().double() if reduction == "mean" else torch.tensor(1.0, dtype=torch.float64, device=DEV)
    sw = (wy * valid).sum() if reduction == "mean" else torch.tensor(1.0, dtype=torch.float64, device=DEV)
    eps = ls / V
    zy = z.gather(1, ty[:, None])[:, 0]
    loss = wy * (lse - zy)
    scale = wy.abs() * (lse.abs() + zy.abs())
    if ls > 0:
        loss = loss * (1 - ls) + eps * (W * lse - (w * z).sum(1))
        scale = scale + eps * (W.abs() * lse.abs() + (w * z).abs().sum(1))
    zl = lss * lse * lse / n
    loss = loss / sw
    scale = scale / sw + abs(lss) * lse * lse / n
    factor = wy / sw
    A = ((1 - ls) * wy + eps * W) / sw + 2 * lss * lse / n
    B = -eps / sw
    C = -(1 - ls) * wy / sw
    f = row_scale.double() if row_scale is not None else torch.ones_like(lse)
    if token_scaling:
        py = torch.exp(zy - lse)
        loss, zl, f, scale = loss * py, zl * py, f * py, scale * py
    onehot = torch.zeros_like(z)
    onehot.scatter_(1, ty[:, None], 1.0)
    g = (A[:, None] * p + B * w[None, :] + C[:, None] * onehot) * f[:, None] * chain
    gscale = ((A[:, None] * p).abs() + (B * w[None, :]).abs() + (C[:, None] * onehot).abs()) * f.abs()[:, None] \
        * (chain + 1e-6)
    g[ignored] = 0
    gscale[ignored] = 0
    loss = torch.where(ignored, torch.zeros_like(loss), loss + zl)
    zl = torch.where(ignored, torch.zeros_like(zl), zl)
    am = torch.where(ignored, torch.full_like(ty, -1), z.argmax(1))
    return dict(loss=loss, loss_scale=scale, factor=factor.abs(), z=zl, grad=g, grad_scale=gscale, pred=am,
                denom=(valid.sum(), (wy * valid).sum(), W if weight is not None else 0.0))


def check_loss(name, got, r, ctx):
    g = got.double()
    assert not torch.isnan(g).any(), f"{ctx}: {name} has NaN (unwritten?)"
    tol = 2e-5 * r["factor"] + 1e-5 * r["loss_scale"] + 1e-30
    err = (g - r[name]).abs()
    assert (err <= tol).all(), f"{ctx}: {name}: worst err {err.max().item():.3g}, got {g[err.argmax()].item()!r} " \
                               f"ref {r[name][err.argmax()].item()!r} tol {tol[err.argmax()].item():.3g}"


def check_grad(got, r, dtype, ctx):
    ref = r["grad"]
    assert_close("grad", got, ref, 2 * U[dtype] * ref.abs() + 3e-5 * r["grad_scale"] + TINY[dtype], ctx)


def run_op(x, t, weight=None, ls=0.0, lss=0.0, reduction="mean", softcap=0.0, row_scale=None,
           token_scaling=False, in_place=False, want_z=True, want_pred=True):
    rows = x.shape[0]
    w32 = weight.float().contiguous() if weight is not None else None
    denom = torch.full((4,), float("nan"), device=DEV)
    _backend.launch("cross_entropy_count", [t, w32, denom], [II, x.shape[1]])
    dx = x if in_place else torch.full(x.shape, float("nan"), device=DEV, dtype=x.dtype)
    loss = torch.full((rows,), float("nan"), device=DEV)
    z = torch.full((rows,), float("nan"), device=DEV) if want_z else None
    pred = torch.full((rows,), 12345, device=DEV, dtype=torch.int64) if want_pred else None
    _backend.launch("cross_entropy_fwd", [x, t, w32, denom, row_scale, dx, loss, z, pred],
                    [II, lss, ls, RED[reduction], softcap, 1 if token_scaling else 0])
    return dict(denom=denom, dx=dx, loss=loss, z=z, pred=pred)


# ------------------------------------------------------------------------------------------
# 1. The executor op directly: every vocabulary and dtype, then the feature matrix.

@pytest.mark.parametrize("V", VOCABS)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_op_vocabularies(dtype, V):
    ctx = f"V={V} {_id(dtype)}"
    x, t = make(7, V, dtype, seed=V % 97, ignore=(3,))
    r = reference(x, t)
    o = run_op(x, t)
    assert o["denom"][0].item() == 6 and o["denom"][3].item() == 0
    check_loss("loss", o["loss"], r, ctx)
    check_grad(o["dx"], r, dtype, ctx)
    assert o["pred"].tolist() == r["pred"].tolist(), ctx
    # In place (Liger): dX over X gives bitwise the out-of-place result.
    x2 = x.clone()
    o2 = run_op(x2, t, in_place=True)
    assert torch.equal(x2, o["dx"]) and torch.equal(o2["loss"], o["loss"]), ctx


FEATURES = {
    "plain": {},
    "weights": dict(weighted=True),
    "smoothing": dict(ls=0.1),
    "smoothing+weights": dict(ls=0.2, weighted=True),
    "zloss": dict(lss=1e-4),
    "softcap": dict(softcap=8.0),
    "all": dict(ls=0.1, weighted=True, lss=1e-4, softcap=8.0),
    "token_scaling": dict(token_scaling=True),
    "row_scale": dict(row_scale=True),
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("feature", list(FEATURES))
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_op_features(dtype, feature, reduction):
    ctx = f"{feature} {reduction} {_id(dtype)}"
    f = dict(FEATURES[feature])
    V = 50257  # odd: rows start at every alignment, vector tails
    x, t = make(33, V, dtype, seed=len(feature) + RED[reduction], ignore=(0, 7, 8))
    if f.pop("weighted", False):
        f["weight"] = torch.rand(V, device=DEV) + 0.5
    if f.pop("row_scale", False):
        f["row_scale"] = torch.randn(33, device=DEV)
    r = reference(x, t, reduction=reduction, **f)
    o = run_op(x, t, reduction=reduction, **f)
    check_loss("loss", o["loss"], r, ctx)
    check_loss("z", o["z"], r, ctx)
    check_grad(o["dx"], r, dtype, ctx)
    assert o["pred"].tolist() == r["pred"].tolist(), ctx
    for i in (0, 7, 8):
        assert o["loss"][i].item() == 0 and o["pred"][i].item() == -1 and o["dx"][i].abs().sum().item() == 0


# Calls without argmax (pred), label smoothing or class weights run the plain module
# (LIGERD_CE_FEATURES=0: that one row loop only, which NVRTC compiles ~17x faster); the same call
# with pred runs the ".full" module (docs/perf/cold_start.md). The tests above all ask for pred.
PLAIN_FEATURES = ["plain", "zloss", "softcap", "token_scaling", "row_scale"]


@pytest.mark.parametrize("V", [50257, 262144])  # fp32 x 262144: ce_fwd (two-pass); else the cluster kernel on sm_90
@pytest.mark.parametrize("feature", PLAIN_FEATURES)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_plain_variant_matches_the_full_one(dtype, feature, V):
    """The plain module runs the same row loop as the full one's no-feature path: loss, z-loss and
    gradient bitwise equal (the same arithmetic in the same order, no fast-math), and within the
    float64 reference's tolerances; plan_info names the variant each call takes."""
    from ligerd import _C
    ctx = f"{feature} V={V} {_id(dtype)}"
    f = dict(FEATURES[feature])
    rows = 6
    x, t = make(rows, V, dtype, seed=len(feature) + V % 13, ignore=(2,))
    if f.pop("row_scale", False):
        f["row_scale"] = torch.randn(rows, device=DEV)
    r = reference(x, t, **f)
    plain = run_op(x, t, want_pred=False, **f)
    full = run_op(x, t, want_pred=True, **f)
    check_loss("loss", plain["loss"], r, ctx)
    check_loss("z", plain["z"], r, ctx)
    check_grad(plain["dx"], r, dtype, ctx)
    for k in ("loss", "z", "dx"):
        assert torch.equal(plain[k], full[k]), f"{ctx}: {k} of the plain module differs from the full one's"
    scal = [II, f.get("lss", 0.0), 0.0, RED["mean"], f.get("softcap", 0.0), 1 if f.get("token_scaling") else 0]
    denom, loss = torch.ones(4, device=DEV), torch.empty(rows, device=DEV)
    args = [x, t, None, denom, f.get("row_scale"), x.clone(), loss, None, None]
    tag = _C.plan_info("cross_entropy_fwd", args, scal)["variant"]
    assert not tag.endswith(".full") and tag.startswith("x"), (ctx, tag)
    args[8] = torch.empty(rows, device=DEV, dtype=torch.int64)
    assert _C.plan_info("cross_entropy_fwd", args, scal)["variant"] == tag + ".full", ctx


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_op_many_rows_strided_and_one_row(dtype):
    # More rows than the persistent grid (each block loops), rows of a wider buffer (pitch V+13:
    # every row at another alignment), a strided target; then one row; then no rows.
    V = 128256
    x, t = make(300, V, dtype, seed=5, ignore=(1, 299), pitch=V + 13)
    t = torch.stack([t, t], 1).reshape(-1)[::2]
    assert not x.is_contiguous() and t.stride(0) == 2
    r = reference(x, t, ls=0.05)
    o = run_op(x, t, ls=0.05)
    check_loss("loss", o["loss"], r, f"300x{V} strided {_id(dtype)}")
    check_grad(o["dx"], r, dtype, f"300x{V} strided {_id(dtype)}")
    x1, t1 = make(1, 32000, dtype, seed=9)
    r1 = reference(x1, t1)
    o1 = run_op(x1, t1)
    check_loss("loss", o1["loss"], r1, "one row")
    check_grad(o1["dx"], r1, dtype, "one row")


# ------------------------------------------------------------------------------------------
# 1b. Which forward kernel runs: ce_fwd_cluster (one row per thread-block cluster, kept in shared
# memory) on sm_90/100/103 when a row fits 8 CTAs of 100 KiB, else the two-pass ce_fwd. The
# tests above then cover whichever the planner picks; LIGERD_CE_CLUSTER=0 (read when planning)
# forces ce_fwd, and test_two_pass_fallback_in_subprocess reruns them that way.

def _cluster_gpu():
    major, minor = torch.cuda.get_device_capability()
    return major * 10 + minor in (90, 100, 103)


def _forced_two_pass():
    return os.environ.get("LIGERD_CE_CLUSTER") == "0"


# Cluster size by the planner's rule (cross_entropy_plan_test.cc computes the same by hand):
# the smallest C <= 8 with ceil(floor(V / (16 / b)) / C) * 16 <= 64 KiB, else <= 100 KiB; None =
# does not fit.
EXPECTED_CLUSTER = {(torch.bfloat16, 32000): 1, (torch.bfloat16, 128256): 4, (torch.float16, 151936): 5,
                    (torch.float32, 50257): 4, (torch.float32, 128256): 8, (torch.bfloat16, 262144): 8,
                    (torch.float32, 151936): 6, (torch.float32, 262144): None}


@pytest.mark.parametrize("dtype,V", list(EXPECTED_CLUSTER), ids=lambda v: _id(v))
def test_planned_kernel(dtype, V):
    from ligerd import _C
    x, t = make(4, V, dtype, seed=1)
    denom = torch.ones(4, device=DEV)
    loss = torch.empty(4, device=DEV)
    args = [x, t, None, denom, None, x, loss, None, None]
    info = _C.plan_info("cross_entropy_fwd", args, [II, 0.0, 0.0, 1, 0.0, 0])
    k = info["launches"][0]
    cluster = EXPECTED_CLUSTER[(dtype, V)]
    if _cluster_gpu() and cluster is not None and not _forced_two_pass():
        assert k["kernel"] == "ce_fwd_cluster", info
        assert k["grid"][0] % cluster == 0 and "cluster=%d" % cluster in info["config_text"], info
    else:
        assert k["kernel"] == "ce_fwd", info
    # Loss only (no dX) never needs the stash.
    args[5] = None
    info = _C.plan_info("cross_entropy_fwd", args, [II, 0.0, 0.0, 1, 0.0, 0])
    assert info["launches"][0]["kernel"] == "ce_fwd", info


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
def test_op_longest_rows(dtype):
    # 262144 classes: bf16 rows split over 8 CTAs; fp32 rows (1 MiB) do not fit 8 x 100 KiB and
    # take ce_fwd. Smoothing + weights + z-loss + argmax exercise every pass-1 accumulator.
    V = 262144
    x, t = make(6, V, dtype, seed=11, ignore=(2,))
    w = torch.rand(V, device=DEV) + 0.5
    r = reference(x, t, weight=w, ls=0.1, lss=1e-4)
    o = run_op(x, t, weight=w, ls=0.1, lss=1e-4)
    ctx = f"V={V} {_id(dtype)}"
    check_loss("loss", o["loss"], r, ctx)
    check_loss("z", o["z"], r, ctx)
    check_grad(o["dx"], r, dtype, ctx)
    assert o["pred"].tolist() == r["pred"].tolist(), ctx


def test_two_pass_fallback_in_subprocess():
    # The same op tests with the cluster kernel disabled (a fresh process: plans are cached per
    # geometry). On a GPU without clusters this reruns what already ran: skip.
    if _forced_two_pass() or not _cluster_gpu():
        pytest.skip("forced two-pass, or a GPU without thread-block clusters: the fallback "
                    "ce_fwd is already the kernel under test here")
    import subprocess
    env = dict(os.environ, LIGERD_CE_CLUSTER="0")
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__, "-k",
           "test_op_vocabularies or test_op_features or test_op_many_rows or test_op_longest_rows or "
           "test_planned_kernel or test_op_all_ignored"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]


def test_op_all_ignored_and_out_of_range():
    x, t = make(5, 1000, torch.bfloat16, seed=3, ignore=range(5))
    o = run_op(x, t)
    assert o["denom"][0].item() == 0
    assert torch.equal(o["loss"], torch.zeros(5, device=DEV)) and o["dx"].abs().sum().item() == 0
    # A target outside [0, V) that is not ignore_index: defined NaN result, nothing read out of range.
    x, t = make(4, 1000, torch.float32, seed=4)
    t[1], t[2] = 1000, -7
    o = run_op(x, t)
    assert o["denom"][3].item() == 2
    assert torch.isnan(o["loss"][1]) and torch.isnan(o["loss"][2]) and not torch.isnan(o["loss"][0])
    assert torch.isnan(o["dx"][1]).all() and not torch.isnan(o["dx"][0]).any()
    torch.cuda.synchronize()  # no fault


def test_scale_op():
    g = torch.randn(37, 50257, device=DEV).to(torch.bfloat16)
    g0 = g.clone()
    _backend.launch("cross_entropy_scale", [g, torch.ones(1, device=DEV)], [])
    assert torch.equal(g, g0), "factor 1.0 is a no-op"
    s = torch.randn(37, device=DEV)
    _backend.launch("cross_entropy_scale", [g, s], [])
    assert torch.equal(g, (g0.float() * s[:, None]).to(torch.bfloat16))
    base = g0.clone()
    g1 = base[:, :50000]  # strided rows (pitch 50257: every alignment)
    _backend.launch("cross_entropy_scale", [g1, torch.full((1,), 0.5, device=DEV)], [])
    assert torch.equal(g1, (g0[:, :50000].float() * 0.5).to(torch.bfloat16))
    assert torch.equal(base[:, 50000:], g0[:, 50000:]), "columns outside the view untouched"


# ------------------------------------------------------------------------------------------
# 2. Through the Liger-compatible API: autograd against torch's F.cross_entropy in float64.

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_autograd_matches_torch(dtype, reduction):
    V = 32000
    x0, t = make(64, V, dtype, seed=21, ignore=(5, 6))
    w = torch.rand(V, device=DEV) + 0.5
    gout = torch.randn(64, device=DEV).to(dtype) if reduction == "none" else torch.tensor(1.7, device=DEV).to(dtype)
    p = x0.clone().requires_grad_()
    x = p * 1
    loss = liger_cross_entropy(x, t, weight=w, reduction=reduction, label_smoothing=0.1)
    assert loss.dtype == dtype
    loss.backward(gout)
    pr = x0.double().requires_grad_()
    ref = F.cross_entropy(pr, t, weight=w.double(), reduction=reduction, label_smoothing=0.1, ignore_index=II)
    ref.backward(gout.double())
    u = U[dtype]
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=2 * u + 1e-5, atol=1e-5)
    # the upstream factor is in x's dtype (as Liger): one more rounding of the gradient
    err = (p.grad.double() - pr.grad).abs()
    tol = 4 * u * pr.grad.abs() + 3e-5 * pr.grad.abs().amax(1, keepdim=True) + TINY[dtype]
    assert (err <= tol).all(), f"{reduction} {_id(dtype)}: worst {err.max().item():.3g}"


def test_module_metrics_and_in_place():
    x0, t = make(16, 50257, torch.bfloat16, seed=2, ignore=(3,))
    m = LigerCrossEntropyLoss(lse_square_scale=1e-4, return_z_loss=True, return_token_accuracy=True,
                              return_predicted_tokens=True)
    p = x0.clone().requires_grad_()
    x = p * 1
    out = m(x, t)
    assert isinstance(out, CrossEntropyOutput)
    r = reference(x0, t, lss=1e-4)
    check_grad(x.detach(), r, torch.bfloat16, "logits hold dlogits after the forward (Liger)")
    out.loss.backward()
    check_grad(p.grad, r, torch.bfloat16, "module")
    assert out.predicted_tokens.tolist() == r["pred"].tolist()
    valid = t != II
    acc = ((r["pred"] == t) & valid).double().sum() / valid.sum()
    torch.testing.assert_close(out.token_accuracy.double(), acc)


def test_out_of_range_target_raises():
    x0, t = make(8, 1000, torch.float32, seed=1)
    t[4] = 5000
    with pytest.raises(OpInputError, match="out of bounds"):
        liger_cross_entropy(x0.clone().requires_grad_() * 1, t)


def test_torch_compile_functional_path():
    x0, t = make(32, 32000, torch.bfloat16, seed=8, ignore=(2,))

    def f(x, t):
        return liger_cross_entropy(x.float() * 1, t, label_smoothing=0.05)

    cf = torch.compile(f, fullgraph=True)
    p = x0.clone().requires_grad_()
    loss = cf(p, t)
    loss.backward()
    pr = x0.double().requires_grad_()
    ref = F.cross_entropy(pr, t, label_smoothing=0.05)
    ref.backward()
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(p.grad.double(), pr.grad, rtol=2 ** -7, atol=1e-7)


# ------------------------------------------------------------------------------------------
# 3. Liger parity (when liger_kernel is importable): same semantics on the same inputs.

@pytest.mark.parametrize("kw", [dict(), dict(label_smoothing=0.1, lse_square_scale=1e-4), dict(softcap=10.0),
                                dict(reduction="sum")], ids=["plain", "ls+z", "softcap", "sum"])
def test_liger_parity(kw):
    L = liger_peer("LigerCrossEntropyLoss")
    x0, t = make(128, 128256, torch.bfloat16, seed=17, ignore=(0, 9))
    pa, pb = x0.clone().requires_grad_(), x0.clone().requires_grad_()
    la = LigerCrossEntropyLoss(**kw)(pa * 1, t)
    lb = L(**kw)(pb * 1, t)
    la.backward()
    lb.backward()
    # Both round the loss to bf16 (ours after an fp32 sum, Liger per row): 2 bf16 ulps.
    torch.testing.assert_close(la.float(), lb.float(), rtol=2 ** -7, atol=1e-6)
    # Gradients: each is one bf16 rounding of nearly the same fp32 value.
    torch.testing.assert_close(pa.grad.float(), pb.grad.float(), rtol=2 ** -7, atol=1e-9)
