"""``MixtralForCausalLM.forward`` with the fused linear cross-entropy: the generic MoE forward (router auxiliary loss).
See ligerd/transformers/model/causal_lm.py."""

from ligerd.transformers.model.causal_lm import make_moe_causal_lm_forward

lce_forward = make_moe_causal_lm_forward("transformers.models.mixtral.modeling_mixtral")
