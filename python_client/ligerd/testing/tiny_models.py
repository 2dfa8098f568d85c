"""Tiny configurations of every model type ligerd patches (tests/python/test_model_types.py on the
CPU; tests/gpu/test_model_types_gpu.py on a GPU): transformers' own config classes with small
sizes (hidden 64, 2 text layers, vocab 128, 4 experts, one vision layer), built text-only.

``tiny_config(model_type)`` starts from the config class's defaults and overrides the size
fields it has (for composite vision-language configs, in its text and vision sub-configs); a few
families need their own values (linear-attention heads, Mamba sizes, MLA ranks, M-RoPE sections).
``assert_patch_matches`` compares one patched kernel's tiny model with transformers' (the GPU
tests' "tiny model with ligerd's <op>" cases).
"""

from __future__ import annotations

import contextlib

import inspect
from typing import Optional

VOCAB = 128

TEXT = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
    tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    attention_dropout=0.0,
    # MoE
    moe_intermediate_size=32, num_experts=4, num_local_experts=4, n_routed_experts=4,
    num_experts_per_tok=2, n_shared_experts=1, shared_expert_intermediate_size=32,
    n_group=1, topk_group=1, first_k_dense_replace=1, output_router_logits=True,
    router_aux_loss_coef=0.02, decoder_sparse_step=1, mlp_only_layers=[],
    # MLA (DeepSeek)
    kv_lora_rank=32, q_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
    # linear attention (Qwen3-Next, Qwen3.5)
    linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
    linear_value_head_dim=16, linear_conv_kernel_dim=4,
    # Mamba-2 (Falcon-H1)
    mamba_d_ssm=64, mamba_n_heads=4, mamba_d_head=16, mamba_n_groups=1, mamba_d_state=16,
    mamba_d_conv=4, mamba_chunk_size=16, mamba_expand=1,
    # Gemma-4 per-layer inputs
    vocab_size_per_layer_input=VOCAB, hidden_size_per_layer_input=16,
)

VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
    depth=1, num_heads=2, embed_dim=32, image_size=32, patch_size=8, head_dim=16,
    num_global_layers=1, vision_output_dim=32, out_hidden_size=64, projector_input_dim=64,
    projector_output_dim=64, intermediate_layers_indices=[0], num_key_value_heads=2,
)

# Per model type: extra text / vision / top-level overrides.
EXTRA = {
    "qwen3_next": dict(text=dict(layer_types=["linear_attention", "full_attention"])),
    "qwen3_5": dict(text=dict(layer_types=["linear_attention", "full_attention"])),
    "qwen3_5_text": dict(text=dict(layer_types=["linear_attention", "full_attention"])),
    "qwen3_5_moe": dict(text=dict(layer_types=["linear_attention", "full_attention"])),
    "qwen3_5_moe_text": dict(text=dict(layer_types=["linear_attention", "full_attention"])),
    "gemma2": dict(text=dict(final_logit_softcapping=3.0)),
    "deepseek_v2": dict(text=dict(head_dim=8, num_key_value_heads=4)),
    "deepseek_v3": dict(text=dict(head_dim=8, num_key_value_heads=4)),
    "deepseek_v4": dict(text=dict(
        num_key_value_heads=1, head_dim=32, layer_types=["heavily_compressed_attention",
                                                         "compressed_sparse_attention"],
        mlp_layer_types=["moe", "moe"], o_groups=2, o_lora_rank=32, index_n_heads=2,
        index_head_dim=16, index_topk=4, num_nextn_predict_layers=0, sliding_window=8, hc_mult=2)),
    # Gemma 4 with its MoE block on (as its MoE variants: a dense MLP and GeLU experts per layer)
    "gemma4": dict(drop=("head_dim",), text=dict(enable_moe_block=True, top_k_experts=2)),
    "gemma4_text": dict(drop=("head_dim",), text=dict(enable_moe_block=True, top_k_experts=2)),
    # M-RoPE sections: half the rotary dimension (head_dim 16; GLM-4V rotates half of it)
    "qwen2_vl": dict(text=dict(rope_parameters=dict(rope_type="default", rope_theta=1e6,
                                                    mrope_section=[2, 3, 3]))),
    "qwen2_5_vl": dict(text=dict(rope_parameters=dict(rope_type="default", rope_theta=1e6,
                                                      mrope_section=[2, 3, 3]))),
    "glm4v": dict(text=dict(rope_parameters=dict(rope_type="default", rope_theta=1e4,
                                                 partial_rotary_factor=0.5, mrope_section=[1, 1, 2]))),
    "glm4v_moe": dict(text=dict(rope_parameters=dict(rope_type="default", rope_theta=1e4,
                                                     partial_rotary_factor=0.5,
                                                     mrope_section=[1, 1, 2]))),
    "falcon_h1": dict(text=dict(lm_head_multiplier=0.5, mlp_multipliers=[0.8, 1.25])),
}


EXTRA["qwen2_vl_text"] = EXTRA["qwen2_vl"]
EXTRA["qwen2_5_vl_text"] = EXTRA["qwen2_5_vl"]


def _accepts(cls, name) -> bool:
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _make(cls, defaults: dict, extra: Optional[dict] = None, drop=()):
    """``cls(**overrides)`` with the overrides whose names the default config has."""
    base = cls()
    kw = {k: v for k, v in defaults.items()
          if k not in drop and k in vars(base) and _accepts(cls, k)}
    kw.update(extra or {})
    return cls(**kw)


def tiny_config(model_type: str, **text_sizes):
    """A tiny config of ``model_type`` (transformers' CONFIG_MAPPING class); ``text_sizes``
    override the text model's sizes (e.g. hidden_size=256, vocab_size=2048 for the GPU test)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    cls = CONFIG_MAPPING[model_type]
    base = cls()
    extra = dict(EXTRA.get(model_type, {}))
    if text_sizes:
        extra["text"] = {**extra.get("text", {}), **text_sizes}
    subs = {k: v for k, v in vars(base).items()
            if k in ("text_config", "vision_config") and v is not None and hasattr(v, "to_dict")}
    if not subs:
        return _make(cls, TEXT, extra.get("text"), extra.get("drop", ()))
    kw = {}
    if "text_config" in subs:
        kw["text_config"] = _make(type(subs["text_config"]), TEXT, extra.get("text"),
                                  extra.get("drop", ()))
    if "vision_config" in subs:
        kw["vision_config"] = _make(type(subs["vision_config"]), VISION, extra.get("vision"))
    kw.update(extra.get("top", {}))
    top = {k: v for k, v in (("tie_word_embeddings", False), ("image_token_id", VOCAB - 1),
                             ("image_token_index", VOCAB - 1), ("video_token_id", VOCAB - 2),
                             ("pad_token_id", 0), ("out_hidden_size", 64),
                             ("projector_hidden_size", 64))
           if hasattr(base, k)}
    kw = {**top, **kw}
    return cls(**kw)


# Text-model config types that the auto classes do not map to a causal LM.
TEXT_HEADS = {"mllama_text_model": ("mllama", "MllamaForCausalLM")}


def head_class(model_type: str, modeling=None):
    """The class a tiny model of ``model_type`` is built as: its ForConditionalGeneration, else its
    ForCausalLM, else (a vision encoder) its base model."""
    import importlib
    from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText)
    if model_type in TEXT_HEADS:
        module, name = TEXT_HEADS[model_type]
        return getattr(importlib.import_module(f"transformers.models.{module}.modeling_{module}"), name)
    cfg = tiny_config(model_type)
    for auto in (AutoModelForImageTextToText, AutoModelForCausalLM, AutoModel):
        cls = auto._model_mapping.get(type(cfg), None) if type(cfg) in auto._model_mapping else None
        if cls is not None:
            return cls
    raise LookupError(model_type)


def build(model_type: str, seed: int = 0, dtype=None, cfg=None, device=None):
    """A tiny model of ``model_type`` in eval mode, eager attention, fp32 unless ``dtype``."""
    import torch
    torch.manual_seed(seed)
    cfg = cfg or tiny_config(model_type)
    cls = head_class(model_type)
    kw = dict(attn_implementation="eager")
    if dtype is not None:
        kw["dtype"] = dtype
    if dtype == torch.float64 and any(hasattr(c, n) for c in (cfg, getattr(cfg, "text_config", None))
                                      for n in ("num_experts", "num_local_experts", "n_routed_experts")):
        kw["experts_implementation"] = "eager"  # torch's grouped_mm has no fp64 kernel
    with torch.device(device or "cpu"):
        model = cls._from_config(cfg, **kw)
    return model.eval()


@contextlib.contextmanager
def _model_at(model_type: str, cfg, init_state, *, use_ligerd: bool, dtype, device):
    """A tiny ``model_type`` model at ``init_state`` in train mode, built with
    ``apply_liger_kernel_to_<type>()`` (class patching, defaults) when ``use_ligerd``; the patches
    are reverted before and after."""
    import ligerd.transformers as lt
    from ligerd.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    lt.revert_liger_kernel_patches()
    try:
        if use_ligerd:
            MODEL_TYPE_TO_APPLY_LIGER_FN[model_type]()
        model = build(model_type, dtype=dtype, cfg=cfg, device=device)
        model.load_state_dict({k: v.to(device) for k, v in init_state.items()})
        model.train()
        yield model
    finally:
        lt.revert_liger_kernel_patches()


def train(model_type: str, cfg, data, init_state, *, use_ligerd: bool, dtype=None, device="cpu",
          micro_batches: int = 1, lr: float = 3e-3, eval_batch=None):
    """AdamW training of a tiny ``model_type`` model from ``init_state`` on ``data`` (a list of
    (input_ids, labels)), with ``apply_liger_kernel_to_<type>()`` (class patching, defaults) when
    ``use_ligerd``; with ``micro_batches`` > 1 each step accumulates with transformers'
    ``num_items_in_batch``. Returns a ligerd.testing.convergence.Run."""
    import torch

    from ligerd.testing.convergence import Run
    with _model_at(model_type, cfg, init_state, use_ligerd=use_ligerd, dtype=dtype, device=device) as model:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, foreach=False)
        run = Run()
        for ids, labels in data:
            ids, labels = ids.to(device), labels.to(device)
            n = int((labels[:, 1:] != -100).sum()) if micro_batches > 1 else None
            total = aux = 0.0
            for x, y in zip(ids.chunk(micro_batches), labels.chunk(micro_batches)):
                kw = {} if n is None else {"num_items_in_batch": torch.tensor(n, device=device)}
                out = model(input_ids=x, labels=y, **kw)
                out.loss.backward()
                total += float(out.loss.detach())
                if getattr(out, "aux_loss", None) is not None:
                    aux += float(out.aux_loss.detach())
            opt.step()
            opt.zero_grad(set_to_none=True)
            run.losses.append(total)
            run.aux_losses.append(aux)
        keep = torch.float64 if dtype == torch.float64 else torch.float32
        if eval_batch is not None:
            model.eval()
            with torch.no_grad():
                run.eval_logits = model(input_ids=eval_batch[0].to(device)).logits.to("cpu", keep)
        run.params = {k: p.detach().to("cpu", keep, copy=True) for k, p in model.named_parameters()}
        return run


def first_step_grads(model_type: str, cfg, batch, init_state, *, use_ligerd: bool, dtype=None,
                     device="cpu"):
    """One forward and backward of a tiny ``model_type`` model at ``init_state`` on ``batch``
    (input_ids, labels), with ``apply_liger_kernel_to_<type>()`` when ``use_ligerd``: (loss, {name:
    grad}), the grads in float64 on the CPU. Before any optimizer step no trajectory can part, so
    this compares the ops, not a training run's sensitivity (a top-k router near a tie)."""
    import torch

    with _model_at(model_type, cfg, init_state, use_ligerd=use_ligerd, dtype=dtype, device=device) as model:
        ids, labels = (t.to(device) for t in batch)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        return float(loss.detach()), {k: p.grad.detach().to("cpu", torch.float64)
                                      for k, p in model.named_parameters() if p.grad is not None}


def assert_patch_matches(model_type: str, patch, *, grad_tol: float, cfg=None, device="cpu", check=None,
                         loss_rtol: float = 1e-5, seed: int = 29, shape=(2, 33)) -> None:
    """A tiny ``model_type`` model with ``patch()`` applied (e.g. ``apply_liger_kernel_to_<type>``
    with one kernel on) against the same model unpatched, on the same weights and token ids: one
    forward and backward of each in train mode (``shape`` token ids drawn from ``seed``, used as
    their own labels). Asserts the loss to ``loss_rtol`` relative (atol 0) and every gradient that
    is nonzero in the reference to ``grad_tol`` norm-wise (||got - ref|| / ||ref||, ref in float64).

    The reference is built before ``patch()`` and run after the patches are reverted (transformers
    looks module functions such as apply_rotary_pos_emb up at call time); the patched model is
    built and run while they are in place. ``check(model)``, if given, runs on the patched model
    before its forward (e.g. asserts that the patch took). ``cfg`` defaults to
    ``tiny_config(model_type)``; each build gets its own copy. Patches are reverted before and after."""
    import copy

    import torch

    import ligerd.transformers as lt
    from ligerd.testing.gpu import rel_err
    cfg = cfg if cfg is not None else tiny_config(model_type)
    lt.revert_liger_kernel_patches()
    try:
        ref = build(model_type, cfg=copy.deepcopy(cfg), device=device)
        patch()
        model = build(model_type, cfg=copy.deepcopy(cfg), device=device)
        model.load_state_dict(ref.state_dict())
        if check is not None:
            check(model)
        ref.train()
        model.train()
        gen = torch.Generator(device=device).manual_seed(seed)
        ids = torch.randint(3, VOCAB - 3, shape, device=device, generator=gen)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
    finally:
        lt.revert_liger_kernel_patches()
    loss_ref = ref(input_ids=ids, labels=ids).loss
    loss_ref.backward()
    torch.testing.assert_close(loss, loss_ref, rtol=loss_rtol, atol=0)
    got = dict(model.named_parameters())
    for name, p in ref.named_parameters():
        if p.grad is None or not p.grad.any():
            continue
        err = rel_err(got[name].grad, p.grad.double())
        assert err <= grad_tol, f"{model_type}: {name}: gradient relative error {err:.3g}"


__all__ = ["tiny_config", "head_class", "build", "train", "first_step_grads", "assert_patch_matches", "VOCAB"]
