"""``GemmaForCausalLM.forward`` with the fused linear cross-entropy: the generic dense forward.
See ligerd/transformers/model/causal_lm.py."""

from ligerd.transformers.model.causal_lm import make_causal_lm_forward

lce_forward = make_causal_lm_forward()
