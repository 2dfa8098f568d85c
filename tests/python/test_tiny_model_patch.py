"""ligerd.testing.tiny_models.assert_patch_matches (the GPU tests' "tiny model with one ligerd kernel
against transformers" comparison) on the CPU, the kernels run by the float64 reference executor:
it passes for a right kernel (Nemotron's squared ReLU, Phi-3's partial RoPE), fails when the
kernel's forward or backward is off by 1e-3 relative, and fails when its ``check`` finds the patch
not taken. Tolerances are the GPU tests' (loss 1e-5 relative; gradients 1e-4 / 1e-3 norm-wise):
the executor rounds its float64 results to fp32 once, closer to transformers' fp32 than a kernel."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
pytest.importorskip("transformers", reason="transformers is not installed")

import importlib  # noqa: E402

import ligerd.transformers as lt  # noqa: E402
from ligerd.testing import ref_executor  # noqa: E402
from ligerd.testing import tiny_models as tm  # noqa: E402
from ligerd.transformers import liger_rotary_pos_emb  # noqa: E402


@pytest.fixture
def launcher(monkeypatch):
    return ref_executor.install(monkeypatch)


def nemotron_relu2():
    lt.apply_liger_kernel_to_nemotron(relu_squared=True, fused_linear_cross_entropy=False)


def mlps_are_ligerds(model):
    mlps = [m for m in model.modules() if type(m).__name__.endswith("NemotronMLP")]
    assert mlps and all(type(m).__module__.startswith("ligerd.") for m in mlps), "NemotronMLP not patched"


def test_relu_squared_patch_matches(launcher):
    tm.assert_patch_matches("nemotron", nemotron_relu2, grad_tol=1e-4, check=mlps_are_ligerds)
    assert {c[0] for c in launcher.calls} >= {"relu_squared_fwd", "relu_squared_bwd"}


def test_partial_rope_patch_matches(launcher):
    cfg = tm.tiny_config("phi3")
    cfg.rope_parameters = dict(cfg.rope_parameters, partial_rotary_factor=0.75)

    def rope_is_ligerds(model):
        assert importlib.import_module(type(model).__module__).apply_rotary_pos_emb is liger_rotary_pos_emb

    tm.assert_patch_matches("phi3", lambda: lt.apply_liger_kernel_to_phi3(rope=True, rms_norm=False, swiglu=False,
                                                                           fused_linear_cross_entropy=False),
                            cfg=cfg, grad_tol=1e-3, check=rope_is_ligerds)
    assert {c[0] for c in launcher.calls} >= {"rope_fwd", "rope_bwd"}


def _scaled(op, tensor, factor):
    """The executor's handler of ``op`` with its output ``tensor`` scaled by ``factor`` (a kernel
    off by factor - 1 relative)."""
    handler = ref_executor.HANDLERS[op]

    def wrong(op_, t, s):
        handler(op_, t, s)
        with torch.no_grad():
            getattr(t, tensor).mul_(factor)
    return wrong


@pytest.mark.parametrize("op,tensor", [("relu_squared_fwd", "Y"), ("relu_squared_bwd", "dX")])
def test_a_kernel_off_by_1e3_fails(launcher, monkeypatch, op, tensor):
    """The loss (1e-5) or a gradient (1e-4): the forward's error moves the loss by less than 1e-5
    of it, but every gradient upstream of the MLPs by ~3e-4."""
    monkeypatch.setitem(ref_executor.HANDLERS, op, _scaled(op, tensor, 1 + 1e-3))
    with pytest.raises(AssertionError, match="gradient relative error|Tensor-likes are not close"):
        tm.assert_patch_matches("nemotron", nemotron_relu2, grad_tol=1e-4, check=mlps_are_ligerds)


def test_a_patch_not_taken_fails_its_check(launcher):
    with pytest.raises(AssertionError, match="NemotronMLP not patched"):
        tm.assert_patch_matches("nemotron", lambda: None, grad_tol=1e-4, check=mlps_are_ligerds)
