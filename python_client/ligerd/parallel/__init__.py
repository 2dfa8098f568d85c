"""Multi-rank pieces of ligerd that have no single-GPU counterpart in Liger-Kernel: the
vocab-parallel fused linear cross-entropy (a tensor-parallel LM head, Liger-Kernel issue #826).
docs/multi_gpu.md says what runs where."""

from ligerd.parallel.vocab_parallel_loss import (  # noqa: F401
    LigerVocabParallelFusedLinearCrossEntropyLoss,
    vocab_parallel_fused_linear_cross_entropy,
    vocab_shard_range,
)

__all__ = ["LigerVocabParallelFusedLinearCrossEntropyLoss", "vocab_parallel_fused_linear_cross_entropy",
           "vocab_shard_range"]
