"""``Gemma3ForCausalLM.forward`` with the fused linear cross-entropy: the generic dense forward with config.final_logit_softcapping (model type gemma3_text).
See ligerd/transformers/model/causal_lm.py."""

from ligerd.transformers.model.causal_lm import make_causal_lm_forward

lce_forward = make_causal_lm_forward(final_logit_softcapping=True)
