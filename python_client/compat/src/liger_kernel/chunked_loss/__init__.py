"""``liger_kernel.chunked_loss`` (TRL imports the DPO, KTO, GRPO and JSD losses here whenever
liger_kernel is installed): ligerd.chunked_loss's objects themselves (Liger-Kernel 0.8.5's names,
signatures and returns). Liger's other names here, should ligerd lack one, are stand-ins that
raise LigerdNotProvidedError when used."""

from liger_kernel import _shim

LIGER_NAMES = (
    "LigerFusedLinearCosineSimilarityLoss", "LigerFusedLinearCPOLoss", "LigerFusedLinearDPOLoss",
    "LigerFusedLinearGRPOLoss", "LigerFusedLinearJSDLoss", "LigerFusedLinearKTOLoss",
    "LigerFusedLinearORPOLoss", "LigerFusedLinearSimPOLoss",
)

__getattr__, __dir__ = _shim.delegating_module(globals(), "ligerd.chunked_loss", LIGER_NAMES)
