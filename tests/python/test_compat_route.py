"""The opt-in compatibility route (python_client/compat, docs/compat.md): the `liger-kernel`
distribution it builds makes `import liger_kernel` resolve to ligerd, so that code a user cannot
edit reaches ligerd. Built with pip into a temporary --target folder (never installed here); each
check runs in a subprocess with that folder and python_client/ on PYTHONPATH, as an installed
shim would be seen (ligerd.testing.compat_shim: the fixture and run(), shared with
test_trl_route.py)."""

import textwrap
from pathlib import Path

import pytest

from ligerd.testing.compat_shim import run, shim_dir  # noqa: F401  (shim_dir: a fixture)

ROOT = Path(__file__).resolve().parents[2]


def test_the_plain_ligerd_package_does_not_claim_liger_kernel():
    text = (ROOT / "python_client" / "pyproject.toml").read_text()
    assert 'wheel.packages = ["ligerd"]' in text
    assert not (ROOT / "python_client" / "liger_kernel").exists()


def test_version_is_liger_level_and_says_ligerd(shim_dir):
    out = run(shim_dir, """
        import importlib.metadata as md
        from packaging.version import Version
        import liger_kernel, ligerd
        v = md.version("liger_kernel")
        assert md.version("liger-kernel") == v == liger_kernel.__version__, v
        parsed = Version(v)
        assert parsed >= Version("0.3.0")          # transformers' check
        assert parsed >= Version("0.8.0")          # TRL's LIGER_KERNEL_MIN_VERSION
        assert parsed.local == f"ligerd.{ligerd.__version__}", (parsed.local, ligerd.__version__)
        print("ok", v)
    """)
    assert "+ligerd." in out


def test_availability_checks_of_transformers_and_trl_see_it(shim_dir):
    run(shim_dir, """
        from transformers.utils.import_utils import is_liger_kernel_available
        assert is_liger_kernel_available() is True
        # TRL's check (trl/import_utils.py), as written there: version of "liger_kernel" >= 0.8.0.
        from transformers.utils.import_utils import _is_package_available
        from packaging.version import Version
        ok, v = _is_package_available("liger_kernel", return_version=True)
        assert ok and Version(v) >= Version("0.8.0"), v
    """)


def test_names_are_ligerds_objects(shim_dir):
    run(shim_dir, """
        import ligerd.transformers as lt
        import ligerd.transformers.monkey_patch as lmp
        from liger_kernel.transformers import (apply_liger_kernel_to_llama, LigerRMSNorm,
            LigerFusedLinearCrossEntropyLoss, AutoLigerKernelForCausalLM, liger_rotary_pos_emb,
            MODEL_TYPE_TO_APPLY_LIGER_FN, _apply_liger_kernel_to_instance, functional)
        assert apply_liger_kernel_to_llama is lt.apply_liger_kernel_to_llama
        assert LigerRMSNorm is lt.LigerRMSNorm
        assert LigerFusedLinearCrossEntropyLoss is lt.LigerFusedLinearCrossEntropyLoss
        assert AutoLigerKernelForCausalLM is lt.AutoLigerKernelForCausalLM
        assert liger_rotary_pos_emb is lt.liger_rotary_pos_emb
        assert MODEL_TYPE_TO_APPLY_LIGER_FN is lmp.MODEL_TYPE_TO_APPLY_LIGER_FN
        import liger_kernel.transformers as ct
        # Every public name of ligerd.transformers; the two _apply_liger_kernel* are wrappers that
        # warn for a model type ligerd does not patch and otherwise call ligerd's (trainer tests).
        for name in set(lt.__all__) - {"_apply_liger_kernel", "_apply_liger_kernel_to_instance"}:
            assert getattr(ct, name) is getattr(lt, name), name
        # verl's path, and Axolotl's submodule imports.
        from liger_kernel.transformers.monkey_patch import _apply_liger_kernel_to_instance as a2
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN as m2
        assert a2 is _apply_liger_kernel_to_instance and m2 is MODEL_TYPE_TO_APPLY_LIGER_FN
        from liger_kernel.transformers.rms_norm import LigerRMSNorm as r
        from liger_kernel.transformers.swiglu import LigerSwiGLUMLP
        from liger_kernel.transformers.geglu import LigerGEGLUMLP
        from liger_kernel.transformers.layer_norm import LigerLayerNorm
        from liger_kernel.transformers.cross_entropy import LigerCrossEntropyLoss
        from liger_kernel.transformers.rope import liger_rotary_pos_emb as rope
        from liger_kernel.transformers.rope import liger_rotary_pos_emb_vision as rope_vision
        import ligerd.transformers.rope as lrope
        from liger_kernel.transformers.functional import liger_cross_entropy
        from liger_kernel.transformers.model.loss_utils import LigerForCausalLMLoss
        import ligerd.transformers.functional as lf
        assert r is lt.LigerRMSNorm and LigerSwiGLUMLP is lt.LigerSwiGLUMLP
        assert LigerGEGLUMLP is lt.LigerGEGLUMLP and LigerLayerNorm is lt.LigerLayerNorm
        assert LigerCrossEntropyLoss is lt.LigerCrossEntropyLoss and rope is lt.liger_rotary_pos_emb
        assert rope_vision is lrope.liger_rotary_pos_emb_vision  # the vision towers' RoPE
        assert liger_cross_entropy is lf.liger_cross_entropy is functional.liger_cross_entropy
        # Qwen2-VL's M-RoPE names (transformers 4.x-style code imports them).
        from liger_kernel.transformers.qwen2vl_mrope import liger_multimodal_rotary_pos_emb
        import ligerd.transformers.qwen2vl_mrope as lm
        assert liger_multimodal_rotary_pos_emb is lm.liger_multimodal_rotary_pos_emb
        assert functional.liger_qwen2vl_mrope is lf.liger_qwen2vl_mrope
        assert functional.LigerQwen2VLMRopeFunction is lf.LigerQwen2VLMRopeFunction
        # Squared ReLU (Nemotron's activation): the module, its submodule and the functional names.
        from liger_kernel.transformers.relu_squared import LigerReLUSquared
        import ligerd.transformers.relu_squared as lr
        assert LigerReLUSquared is lt.LigerReLUSquared is lr.LigerReLUSquared
        assert functional.liger_relu_squared is lf.liger_relu_squared
        assert functional.LigerReLUSquaredFunction is lr.LigerReLUSquaredFunction
    """)


def test_every_name_the_integrations_import_exists(shim_dir):
    """The table of docs/compat.md: what HF transformers, TRL, Axolotl's LigerPlugin (and its KD,
    GRPO and kernel modules) and LLaMA-Factory import from liger_kernel."""
    run(shim_dir, """
        import liger_kernel
        import liger_kernel.transformers as liger_transformers
        from liger_kernel.transformers import _apply_liger_kernel_to_instance, apply_liger_kernel_to_granite, functional
        from liger_kernel.chunked_loss import (LigerFusedLinearDPOLoss, LigerFusedLinearGRPOLoss,
            LigerFusedLinearJSDLoss, LigerFusedLinearKTOLoss)
        from liger_kernel.chunked_loss.fused_linear_distillation import LigerFusedLinearDistillationBase
        import liger_kernel.ops.fused_linear_cross_entropy
        from liger_kernel.ops.grpo_loss import fused_selective_log_softmax
        from liger_kernel.ops.utils import (calculate_settings, compare_version, ensure_contiguous,
            torch_to_triton_dtype)
        from liger_kernel.transformers.cross_entropy import LigerCrossEntropyLoss
        from liger_kernel.transformers.functional import liger_cross_entropy
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss
        from liger_kernel.transformers.geglu import LigerGEGLUMLP
        from liger_kernel.transformers.layer_norm import LigerLayerNorm
        from liger_kernel.transformers.model.loss_utils import LigerForCausalLMLoss
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
        from liger_kernel.transformers.rms_norm import LigerRMSNorm
        from liger_kernel.transformers.rope import liger_rotary_pos_emb
        from liger_kernel.transformers.swiglu import LigerSwiGLUMLP
        from liger_kernel.transformers.trainer.orpo_trainer import _FSDPForwardRedirection
        from liger_kernel.utils import PEFT_AVAILABLE, is_npu_available
        import inspect
        for mt in ("gemma", "gemma2", "gemma3", "gemma3_text", "glm4", "glm4v", "gpt_oss", "granite",
                   "llama", "llava", "mistral", "mixtral", "mllama", "olmo2", "paligemma", "phi3",
                   "qwen2", "qwen2_vl", "qwen2_5_vl", "qwen3", "qwen3_moe", "qwen3_next", "qwen3_5",
                   "qwen3_5_moe"):                 # LLaMA-Factory's list
            fn = getattr(liger_transformers, "apply_liger_kernel_to_" + mt)
            if mt not in MODEL_TYPE_TO_APPLY_LIGER_FN:   # a stand-in: Liger's parameters
                from liger_kernel._liger_api import APPLY_SIGNATURES
                assert list(inspect.signature(fn).parameters) == [p for p, _ in APPLY_SIGNATURES[mt]], mt
        # Axolotl's helper imports, real ones.
        import operator
        assert calculate_settings(4096) == (4096, 8)
        assert compare_version("torch", operator.ge, "1.0") is True
        assert isinstance(PEFT_AVAILABLE, bool) and is_npu_available() is False
    """)


def test_missing_names_give_the_clear_error_on_use_not_on_import(shim_dir):
    out = run(shim_dir, """
        import warnings
        from liger_kernel import LigerdNotProvidedError, LigerdCompatWarning
        from liger_kernel.transformers import LigerDyT, LigerTVDLoss
        from liger_kernel.ops import LigerRMSNormFunction
        from liger_kernel.ops.fused_linear_cross_entropy import fused_linear_cross_entropy_forward
        from liger_kernel.chunked_loss.fused_linear_distillation import LigerFusedLinearDistillationBase
        assert issubclass(LigerdNotProvidedError, ImportError)

        def expect(call, name):
            try:
                call()
            except LigerdNotProvidedError as e:
                assert f"ligerd does not provide {name} yet" in str(e), str(e)
            else:
                raise AssertionError(f"{name}: no error")

        expect(lambda: LigerDyT(8), "liger_kernel.transformers.LigerDyT")
        expect(lambda: LigerRMSNormFunction.apply(1), "liger_kernel.ops.LigerRMSNormFunction.apply")
        expect(lambda: fused_linear_cross_entropy_forward(1),
               "liger_kernel.ops.fused_linear_cross_entropy.fused_linear_cross_entropy_forward")

        class KD(LigerFusedLinearDistillationBase):   # Axolotl's KD kernel subclasses it at import
            pass
        expect(lambda: KD(), "liger_kernel.chunked_loss.fused_linear_distillation.LigerFusedLinearDistillationBase")
        assert not hasattr(LigerFusedLinearDistillationBase, "_private")    # introspection still works

        # An unknown name is a plain AttributeError (hasattr works), naming the shim.
        import liger_kernel.transformers as t
        assert not hasattr(t, "no_such_name")
        try:
            from liger_kernel.transformers import no_such_name
        except ImportError as e:
            print("unknown:", e)

        # Every Liger model type is ligerd's own apply function now (test_model_types.py); a part
        # ligerd cannot patch (here: GLM-4V's vision RoPE in a transformers whose module lacks
        # apply_rotary_pos_emb_vision) is kept with a warning, no exception.
        from liger_kernel.transformers import apply_liger_kernel_to_glm4v
        import ligerd.transformers
        from ligerd import LigerdWarning
        import transformers.models.glm4v.modeling_glm4v as glm4v_modeling
        del glm4v_modeling.apply_rotary_pos_emb_vision
        assert apply_liger_kernel_to_glm4v is ligerd.transformers.apply_liger_kernel_to_glm4v
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            apply_liger_kernel_to_glm4v(rope=True, fused_linear_cross_entropy=True)
        assert any(issubclass(x.category, LigerdWarning) and "glm4v" in str(x.message)
                   and "apply_rotary_pos_emb_vision" in str(x.message) for x in w)
        # A model type Liger does not patch either: a warning, no exception.
        from liger_kernel.transformers import _apply_liger_kernel
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            _apply_liger_kernel("bert")
        assert any(issubclass(x.category, LigerdCompatWarning) and "bert" in str(x.message) for x in w)
        print("ok")
    """)
    assert out.strip().endswith("ok")


TRAINER = """
    import warnings, torch
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments
    import ligerd.transformers as lt
    from ligerd import _backend
    from ligerd.testing.ref_executor import RefLauncher
    from ligerd.transformers.monkey_patch import revert_liger_kernel_patches

    # No GPU here: ligerd's ops run through the float64 reference executor (as in the CPU suite),
    # so the trainer's step really goes through ligerd's ops.
    launcher = _backend._test_launcher = RefLauncher()

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=64,
                      max_position_embeddings=64)
    model = LlamaForCausalLM(cfg)
    assert not any(isinstance(m, lt.LigerRMSNorm) for m in model.modules())

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 4
        def __getitem__(self, i):
            ids = torch.randint(0, 64, (16,))
            return {"input_ids": ids, "labels": ids.clone()}

    try:
        import accelerate  # noqa: F401  (TrainingArguments needs it)
    except ImportError:
        accelerate = None
    if accelerate is not None:
        args = TrainingArguments(output_dir=OUT, use_liger_kernel=True, liger_kernel_config=CONFIG,
                                 max_steps=1, per_device_train_batch_size=2, report_to=[],
                                 use_cpu=True, save_strategy="no", logging_strategy="no")
        trainer = Trainer(model=model, args=args, train_dataset=Data())
        result = trainer.train()  # transformers 5.25 applies Liger in train(), not in __init__
        assert torch.isfinite(torch.tensor(result.training_loss)), result
        ops = {c[0] for c in launcher.calls}
        assert "rms_norm_fwd" in ops and "rms_norm_bwd" in ops, ops
        print("trained", result.global_step, "steps through", ",".join(sorted(ops)))
        patched = trainer.model
    else:
        # Without accelerate TrainingArguments cannot be built; call what Trainer.train() calls for
        # use_liger_kernel (transformers/trainer.py: apply_liger_kernel(model, liger_kernel_config)).
        from transformers.integrations.liger import apply_liger_kernel
        apply_liger_kernel(model, CONFIG)
        patched = model
        print("path: transformers.integrations.liger.apply_liger_kernel (no accelerate)")
    # ligerd patches a built model's modules in place (as Liger does): the forward is ligerd's.
    norms = [m for m in patched.modules() if "RMSNorm" in type(m).__name__]
    assert norms and all(getattr(m.forward, "__func__", None) is lt.LigerRMSNorm.forward
                         and m._get_name() == "LigerRMSNorm" for m in norms), \
        [(type(m), m.forward) for m in norms]
    print("patched", len(norms))
"""


@pytest.mark.parametrize("config", [None, {"rope": False, "fused_linear_cross_entropy": False}],
                         ids=["default", "liger_kernel_config"])
def test_hf_trainer_use_liger_kernel_reaches_ligerd(shim_dir, tmp_path, config):
    out = run(shim_dir, f"OUT = {str(tmp_path)!r}\nCONFIG = {config!r}\n" + textwrap.dedent(TRAINER))
    assert "patched 5" in out, out      # 2 layers x 2 norms + the final norm
    try:
        import accelerate  # noqa: F401
    except ImportError:
        return
    assert "trained 1 steps through" in out, out   # the real Trainer.train(), through ligerd's ops
    ops = set(out.split("trained 1 steps through ")[1].split()[0].split(","))
    # liger_kernel_config is honoured: rope and the fused linear loss off leave only norms and MLPs
    fused = {"rope_fwd", "rope_bwd", "gemm", "cross_entropy_fwd"}
    assert (fused <= ops) if config is None else not (fused & ops), (config, ops)


def test_chunked_losses_are_ligerds(shim_dir):
    """TRL's and Axolotl's chunked-loss imports give ligerd.chunked_loss's objects."""
    run(shim_dir, """
        import ligerd.chunked_loss as ours
        import ligerd.chunked_loss.functional as ours_f
        from liger_kernel.chunked_loss import (LigerFusedLinearDPOLoss, LigerFusedLinearGRPOLoss,
            LigerFusedLinearJSDLoss, LigerFusedLinearKTOLoss, LigerFusedLinearORPOLoss)
        from liger_kernel.chunked_loss.functional import liger_fused_linear_dpo
        assert LigerFusedLinearDPOLoss is ours.LigerFusedLinearDPOLoss
        assert LigerFusedLinearGRPOLoss is ours.LigerFusedLinearGRPOLoss
        assert LigerFusedLinearJSDLoss is ours.LigerFusedLinearJSDLoss
        assert LigerFusedLinearKTOLoss is ours.LigerFusedLinearKTOLoss
        assert LigerFusedLinearORPOLoss is ours.LigerFusedLinearORPOLoss
        assert liger_fused_linear_dpo is ours_f.liger_fused_linear_dpo
        assert LigerFusedLinearDPOLoss(beta=0.2).beta == 0.2
    """)
