"""The model types of Liger-Kernel 0.8.5 beyond the twelve hand-written ones
(``monkey_patch.FAMILIES``): for each, the modeling module, Liger's keyword arguments and defaults,
and what each argument replaces or, where ligerd has no kernel for it, what is kept as it is
(spec_patching.py says how a spec is applied; docs/models.md is the table in prose).

Signatures are Liger-Kernel's (``src/liger_kernel/transformers/monkey_patch.py``, the revision
the compat shim's ``_liger_api.py`` was read from), except deepseek_v2, deepseek_v3 and
muse_glimmer, which that revision does not have: for those the defaults are ligerd's choice
(the keyword arguments of their closest relatives: deepseek_v4 and gemma4_text).

RMSNorm settings follow each transformers class's arithmetic: "llama" casting where the class
multiplies the weight in the input dtype (``weight * h.to(dtype)``), "gemma" where it multiplies in
fp32 and casts after (``(weight * h).to(dtype)``, ``h * w.float()``), offset 1 for ``(1 + w)``;
in_place off where Liger turns it off for that model.
"""

from __future__ import annotations

from typing import Dict, Tuple

from ligerd.transformers.spec_patching import MLP, Head, Norm, Spec

R, CE, FL, RMS, LN, SW, GE, M = ("rope", "cross_entropy", "fused_linear_cross_entropy", "rms_norm",
                                 "layer_norm", "swiglu", "geglu", "model")
KW = ("kwargs", "**")


def _sig(*pairs) -> Tuple[Tuple[str, object], ...]:
    return tuple(pairs)


DENSE_SIG = _sig((R, True), (CE, False), (FL, True), (RMS, True), (SW, True), (M, None))

# RoPE: the standard rotate_half one, full or partial (cos/sin over the first rotary_dim of the
# head; Qwen3-Next, Qwen3.5, GLM-4V-MoE) and the text RoPE of Qwen2-VL / Qwen2.5-VL / Qwen3-VL
# (transformers 5 selects the M-RoPE sections in the rotary-embedding module; apply_rotary_pos_emb
# is the plain one), is "std": liger_rotary_pos_emb computes both. The interleaved-pair, complex
# (freqs_cis) and half-size-cos RoPEs of GLM-4, GLM-4V's text model, DeepSeek-V2/V3, Llama-4's text
# model, GPT-OSS, and the one-tensor RoPEs of DeepSeek-V4 and Gemma-4 are ``rope_fns``: ligerd.transformers.rope_interleaved computes them with the
# same kernel between de-/re-interleaving copies. The vision towers' apply_rotary_pos_emb_vision
# (q/k (seq, heads, d), rotate_half in fp32, cast back) is a ``rope_fns`` entry too:
# liger_rotary_pos_emb_vision (ligerd.transformers.rope), as Liger patches it for qwen3_vl(_moe).
VISION_ROPE_FNS = (("apply_rotary_pos_emb_vision", "liger_rotary_pos_emb_vision"),)


def _llama_norm(cls, in_place=True):
    return Norm(cls, 0.0, "llama", in_place)


def _fp32_norm(cls, in_place=False):
    return Norm(cls, 0.0, "gemma", in_place)


def _centered_norm(cls):  # (1 + w), all in fp32 (Qwen3-Next, Qwen3.5)
    return Norm(cls, 1.0, "gemma", False)


SPECS: Tuple[Spec, ...] = (
    # --- dense decoders ---------------------------------------------------------------------
    Spec("ministral", "ministral", DENSE_SIG, "Ministral",
         norms=(_llama_norm("MinistralRMSNorm"),), mlps=(MLP("MinistralMLP"),),
         heads=(Head("MinistralForCausalLM"),)),
    Spec("smollm3", "smollm3", DENSE_SIG, "SmolLM3 (NoPE layers keep no RoPE, as in transformers)",
         norms=(_llama_norm("SmolLM3RMSNorm"),), mlps=(MLP("SmolLM3MLP"),),
         heads=(Head("SmolLM3ForCausalLM"),)),
    Spec("olmo3", "olmo3", DENSE_SIG, "OLMo 3",
         norms=(_fp32_norm("Olmo3RMSNorm"),), mlps=(MLP("Olmo3MLP"),),
         heads=(Head("Olmo3ForCausalLM"),)),
    Spec("exaone4", "exaone4", DENSE_SIG, "EXAONE 4",
         norms=(_llama_norm("Exaone4RMSNorm", in_place=False),), mlps=(MLP("Exaone4MLP"),),
         heads=(Head("Exaone4ForCausalLM"),)),
    Spec("hunyuan_v1_dense", "hunyuan_v1_dense", DENSE_SIG, "Hunyuan V1 dense",
         norms=(_llama_norm("HunYuanDenseV1RMSNorm"),), mlps=(MLP("HunYuanDenseV1MLP"),),
         heads=(Head("HunYuanDenseV1ForCausalLM"),)),
    Spec("glm4", "glm4", _sig((R, False), (CE, False), (FL, True), (RMS, True), (SW, True), (M, None)),
         "GLM-4 (fused gate_up MLP; interleaved partial RoPE)", rope="",
         rope_fns=(("apply_rotary_pos_emb", "liger_glm4_rotary_pos_emb"),),
         norms=(_llama_norm("Glm4RMSNorm", in_place=False),),
         mlps=(MLP("Glm4MLP", "fused_swiglu"),), heads=(Head("Glm4ForCausalLM"),)),
    Spec("falcon_h1", "falcon_h1", DENSE_SIG, "Falcon-H1 (hybrid attention + Mamba-2)",
         norms=(_llama_norm("FalconH1RMSNorm"),), mlps=(MLP("FalconH1MLP", "falcon_h1"),),
         heads=(Head("FalconH1ForCausalLM", "falcon_h1"),)),
    Spec("nemotron", "nemotron",
         _sig(("relu_squared", True), (CE, False), (FL, True), (M, None), KW),
         "Nemotron (squared-ReLU MLP)",
         mlps=(MLP("NemotronMLP", "relu2"),), heads=(Head("NemotronForCausalLM"),)),
    # --- mixture of experts -----------------------------------------------------------------
    Spec("deepseek_v2", "deepseek_v2",
         _sig((R, False), (CE, False), (FL, True), (RMS, True), (SW, True), (M, None)),
         "DeepSeek-V2 (complex RoPE of MLA's rope part)", rope="",
         rope_fns=(("apply_rotary_emb", "liger_deepseek_v2_rotary_emb"),),
         norms=(_llama_norm("DeepseekV2RMSNorm"),),
         mlps=(MLP("DeepseekV2MLP"), MLP("DeepseekV2Experts", "experts")),
         heads=(Head("DeepseekV2ForCausalLM"),)),
    Spec("deepseek_v3", "deepseek_v3",
         _sig((R, False), (CE, False), (FL, True), (RMS, True), (SW, True), (M, None)),
         "DeepSeek-V3 (MLA rope part: rotate_half or interleaved)", rope="",
         rope_fns=(("apply_rotary_pos_emb", "liger_deepseek_v3_rotary_pos_emb"),
                   ("apply_rotary_pos_emb_interleave", "liger_deepseek_v3_rotary_pos_emb_interleave")),
         norms=(_llama_norm("DeepseekV3RMSNorm"),),
         mlps=(MLP("DeepseekV3MLP"), MLP("DeepseekV3Experts", "experts")),
         heads=(Head("DeepseekV3ForCausalLM"),)),
    Spec("deepseek_v4", "deepseek_v4",
         _sig((R, False), (CE, False), (FL, True), (RMS, True), (SW, False), (M, None)),
         "DeepSeek-V4 (one-tensor trailing interleaved RoPE)", rope="",
         rope_fns=(("apply_rotary_pos_emb", "liger_deepseek_v4_rotary_pos_emb"),),
         norms=(_fp32_norm("DeepseekV4RMSNorm", in_place=True),),
         mlps=(MLP("DeepseekV4MLP", "clamped_swiglu"), MLP("DeepseekV4Experts", "clamped_experts")),
         heads=(Head("DeepseekV4ForCausalLM"),)),
    Spec("gpt_oss", "gpt_oss",
         _sig((R, True), (CE, False), (FL, True), (RMS, True), (SW, False), (M, None)),
         "GPT-OSS (half-size cos/sin RoPE)", rope="",
         rope_fns=(("apply_rotary_pos_emb", "liger_gpt_oss_rotary_pos_emb"),),
         norms=(_fp32_norm("GptOssRMSNorm", in_place=True),),
         mlps=(MLP("GptOssExperts", "gpt_oss_experts"),),
         heads=(Head("GptOssForCausalLM"),)),
    Spec("hunyuan_v1_moe", "hunyuan_v1_moe", DENSE_SIG, "Hunyuan V1 MoE",
         norms=(_llama_norm("HunYuanMoEV1RMSNorm"),),
         mlps=(MLP("HunYuanMoEV1MLP"), MLP("HunYuanMoEV1Experts", "experts")),
         heads=(Head("HunYuanMoEV1ForCausalLM"),)),
    Spec("llama4", "llama4",
         _sig((R, True), (CE, False), (FL, True), (RMS, True), (SW, True), (M, None), (LN, True)),
         "Llama 4 (text and vision)",
         rope="",
         rope_fns=(("apply_rotary_emb", "liger_llama4_text_rotary_pos_emb"),
                   ("vision_apply_rotary_emb", "liger_llama4_vision_rotary_pos_emb")),
         norms=(_llama_norm("Llama4TextRMSNorm"),),
         mlps=(MLP("Llama4TextMLP"), MLP("Llama4TextExperts", "llama4_experts")),
         layer_norm_modules=("llama4",), heads=(Head("Llama4ForCausalLM"),),
         heads_note="Llama4ForConditionalGeneration computes its logits in its language model "
                    "(a Llama4ForCausalLM), so its own forward is not replaced, as in Liger"),
    # --- hybrid (linear attention + attention) ---------------------------------------------
    Spec("qwen3_next", "qwen3_next",
         _sig((R, False), (CE, False), (FL, True), (RMS, True), (SW, True), (M, None)),
         "Qwen3-Next (gated DeltaNet + attention, MoE; partial RoPE)",
         norms=(_centered_norm("Qwen3NextRMSNorm"),),
         mlps=(MLP("Qwen3NextMLP"), MLP("Qwen3NextExperts", "experts")),
         heads=(Head("Qwen3NextForCausalLM"),)),
    Spec("qwen3_5", "qwen3_5",
         _sig((R, False), (CE, False), (FL, True), (RMS, True), (SW, True), (M, None)),
         "Qwen3.5 (gated DeltaNet + attention, partial RoPE; text and vision-language)",
         rope_fns=VISION_ROPE_FNS,
         norms=(_centered_norm("Qwen3_5RMSNorm"),), mlps=(MLP("Qwen3_5MLP"),),
         heads=(Head("Qwen3_5ForCausalLM"), Head("Qwen3_5ForConditionalGeneration"))),
    Spec("qwen3_5_moe", "qwen3_5_moe",
         _sig((R, False), (CE, False), (FL, True), (RMS, True), (SW, True), (M, None)),
         "Qwen3.5-MoE (partial RoPE)", rope_fns=VISION_ROPE_FNS,
         norms=(_centered_norm("Qwen3_5MoeRMSNorm"),),
         mlps=(MLP("Qwen3_5MoeMLP"), MLP("Qwen3_5MoeExperts", "experts")),
         heads=(Head("Qwen3_5MoeForCausalLM"), Head("Qwen3_5MoeForConditionalGeneration"))),
    # --- vision-language ---------------------------------------------------------------------
    Spec("gemma3", "gemma3",
         _sig((R, True), (CE, False), (FL, True), (LN, True), (RMS, True), (GE, True), (M, None)),
         "Gemma 3 vision-language (text patches as gemma3_text; SigLIP LayerNorms)",
         rope="", layer_norm_modules=("siglip",), text_types=("gemma3_text",),
         heads=(Head("Gemma3ForConditionalGeneration"),)),
    Spec("paligemma", "paligemma",
         _sig((R, True), (CE, False), (FL, True), (LN, True), (RMS, True), (GE, True), (M, None)),
         "PaliGemma 1/2 (text patches as gemma / gemma2; SigLIP LayerNorms)",
         rope="", layer_norm_modules=("siglip",), text_types=("gemma", "gemma2"),
         heads=(Head("PaliGemmaForConditionalGeneration", "softcap"),)),
    Spec("gemma4_text", "gemma4",
         _sig((R, False), (CE, False), (FL, True), (RMS, True), (GE, True), (M, None)),
         "Gemma 4 text (one-tensor RoPE)", rope="",
         rope_fns=(("apply_rotary_pos_emb", "liger_gemma4_rotary_pos_emb"),),
         norms=(_fp32_norm("Gemma4RMSNorm"),),
         # The MoE variants' experts (enable_moe_block): ligerd's GeGLU between transformers' own
         # expert GEMMs, where Liger-Kernel 0.8.5 leaves them as transformers'.
         mlps=(MLP("Gemma4TextMLP", "geglu"), MLP("Gemma4TextExperts", "geglu_experts")),
         heads=(Head("Gemma4ForCausalLM", "softcap"),)),
    Spec("gemma4", "gemma4",
         _sig((R, False), (CE, False), (FL, True), (LN, False), (RMS, True), (GE, True), (M, None)),
         "Gemma 4 vision-language (text patches as gemma4_text)", rope="",
         text_types=("gemma4_text",),
         heads=(Head("Gemma4ForConditionalGeneration", "softcap"),)),
    Spec("muse_glimmer", "muse_glimmer", DENSE_SIG, "Muse-Glimmer vision-language",
         norms=(_fp32_norm("MuseGlimmerRMSNorm"), _centered_norm("MuseGlimmerTextCenteredRMSNorm")),
         mlps=(MLP("MuseGlimmerTextMLP"),), heads=(Head("MuseGlimmerForConditionalGeneration", "muse"),),
         rope_fns=VISION_ROPE_FNS),
    Spec("mllama", "mllama",
         _sig((R, True), (CE, False), (FL, True), (LN, True), (RMS, True), (SW, True), (M, None)),
         "Llama 3.2 Vision (Mllama)", norms=(_llama_norm("MllamaTextRMSNorm"),),
         mlps=(MLP("MllamaTextMLP"),), layer_norm_modules=("mllama",),
         heads=(Head("MllamaForCausalLM"), Head("MllamaForConditionalGeneration"))),
    Spec("llava", "llava", _sig((CE, False), (FL, True), (M, None), KW),
         "LLaVA (with model=: its text and vision models' own patches)", delegate=True,
         heads=(Head("LlavaForConditionalGeneration"),)),
    Spec("internvl", "internvl", _sig((CE, False), (FL, True), (RMS, True), (LN, True), (M, None), KW),
         "InternVL (vision RMSNorm/LayerNorm; with model=: its text model's patches)",
         norms=(_llama_norm("InternVLVisionRMSNorm"),), layer_norm_modules=("internvl",),
         delegate=True, heads=(Head("InternVLForConditionalGeneration"),)),
    Spec("smolvlm", "smolvlm", _sig((CE, False), (FL, True), (RMS, True), (LN, True), (M, None), KW),
         "SmolVLM (vision LayerNorms; with model=: its text model's patches)",
         layer_norm_modules=("smolvlm",), delegate=True,
         heads=(Head("SmolVLMForConditionalGeneration"),)),
    Spec("pixtral", "pixtral", _sig((R, True), (RMS, True), (SW, True), (M, None)),
         "Pixtral vision encoder", norms=(_llama_norm("PixtralRMSNorm"),),
         mlps=(MLP("PixtralMLP"),)),
    Spec("qwen2_vl", "qwen2_vl",
         _sig((R, True), (CE, False), (FL, True), (RMS, True), (LN, True), (SW, True), (M, None)),
         "Qwen2-VL (text M-RoPE and vision RoPE)", rope_fns=VISION_ROPE_FNS,
         norms=(_llama_norm("Qwen2VLRMSNorm"),), mlps=(MLP("Qwen2MLP"),),
         layer_norm_names=("LayerNorm",), heads=(Head("Qwen2VLForConditionalGeneration"),)),
    Spec("qwen2_5_vl", "qwen2_5_vl", DENSE_SIG, "Qwen2.5-VL (text M-RoPE and vision RoPE)",
         rope_fns=VISION_ROPE_FNS,
         norms=(_llama_norm("Qwen2_5_VLRMSNorm"),), mlps=(MLP("Qwen2MLP"),),
         heads=(Head("Qwen2_5_VLForConditionalGeneration"),)),
    Spec("qwen3_vl", "qwen3_vl",
         _sig((R, True), (CE, False), (FL, True), (RMS, True), (SW, False), (M, None)),
         "Qwen3-VL (text and vision RoPE)", rope_fns=VISION_ROPE_FNS,
         norms=(_llama_norm("Qwen3VLTextRMSNorm"),), mlps=(MLP("Qwen3VLTextMLP"),),
         heads=(Head("Qwen3VLForConditionalGeneration"),)),
    Spec("qwen3_vl_moe", "qwen3_vl_moe", DENSE_SIG, "Qwen3-VL-MoE (text and vision RoPE)",
         rope_fns=VISION_ROPE_FNS,
         norms=(_llama_norm("Qwen3VLMoeTextRMSNorm"),),
         mlps=(MLP("Qwen3VLMoeTextExperts", "experts"),),
         heads=(Head("Qwen3VLMoeForConditionalGeneration"),)),
    Spec("glm4v", "glm4v",
         _sig((R, False), (CE, False), (FL, True), (RMS, True), (SW, True), (M, None)),
         "GLM-4V (text: interleaved partial RoPE; vision RoPE)", rope="",
         rope_fns=(("apply_rotary_pos_emb", "liger_glm4v_rotary_pos_emb"),) + VISION_ROPE_FNS,
         norms=(_llama_norm("Glm4vRMSNorm", in_place=False),),
         mlps=(MLP("Glm4vTextMLP", "fused_swiglu"), MLP("Glm4VisionMlp")),
         heads=(Head("Glm4vForConditionalGeneration"),)),
    Spec("glm4v_moe", "glm4v_moe",
         _sig((R, False), (CE, False), (FL, True), (RMS, True), (SW, True), (M, None)),
         "GLM-4V-MoE (text partial RoPE and vision RoPE)", rope_fns=VISION_ROPE_FNS,
         norms=(_llama_norm("Glm4vMoeRMSNorm", in_place=False),
                _llama_norm("Glm4vMoeTextRMSNorm", in_place=False)),
         mlps=(MLP("Glm4vMoeTextMLP"), MLP("Glm4vMoeTextExperts", "experts"),
               MLP("Glm4vMoeisionMlp"), MLP("Glm4vMoeVisionMlp")),
         heads=(Head("Glm4vMoeForConditionalGeneration"),)),
)

SPEC_BY_NAME: Dict[str, Spec] = {s.name: s for s in SPECS}

# config.model_type -> the apply function's name (Liger's MODEL_TYPE_TO_APPLY_LIGER_FN aliases).
MODEL_TYPE_ALIASES: Dict[str, str] = {
    "llama4_text": "llama4", "mllama_text_model": "mllama", "qwen2_vl_text": "qwen2_vl",
    "qwen2_5_vl_text": "qwen2_5_vl", "qwen3_5_text": "qwen3_5", "qwen3_5_moe_text": "qwen3_5_moe",
    "qwen3_vl_text": "qwen3_vl", "qwen3_vl_moe_text": "qwen3_vl_moe",
}

__all__ = ["SPECS", "SPEC_BY_NAME", "MODEL_TYPE_ALIASES"]
