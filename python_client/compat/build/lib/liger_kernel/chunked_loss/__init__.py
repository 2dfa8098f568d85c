"""``liger_kernel.chunked_loss`` (TRL imports the DPO, KTO, GRPO and JSD losses here whenever
liger_kernel is installed): ligerd has no chunked alignment or distillation losses yet. Importing a
name works; instantiating it raises LigerdNotProvidedError."""

from liger_kernel import _shim

LIGER_NAMES = (
    "LigerFusedLinearCosineSimilarityLoss", "LigerFusedLinearCPOLoss", "LigerFusedLinearDPOLoss",
    "LigerFusedLinearGRPOLoss", "LigerFusedLinearJSDLoss", "LigerFusedLinearKTOLoss",
    "LigerFusedLinearORPOLoss", "LigerFusedLinearSimPOLoss",
)

__getattr__, __dir__ = _shim.delegating_module(globals(), None, LIGER_NAMES)
