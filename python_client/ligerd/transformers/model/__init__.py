"""Patched ``*ForCausalLM`` forwards, one module per family as in Liger-Kernel
(``ligerd.transformers.model.llama.lce_forward`` ...), and the causal-LM loss helpers
(``ligerd.transformers.model.loss_utils``). Importing a family module imports transformers."""
