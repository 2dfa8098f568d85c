"""Per-token log-probabilities of selected tokens through an LM head, without the full logits:

    logp[r] = log softmax((x[r] @ W.T + b) / temperature)[targets[r]]          fp32, shape of targets

(Liger-Kernel's chunked selective log-prob of its fused linear PPO base, the ``per_token_logps`` a
GRPO/PPO trainer needs for its old and reference policies.) The forward keeps only the inputs; the
backward recomputes each chunk's logits and writes d logits = g * (onehot - softmax) / T with
ligerd's cross-entropy kernel (row_scale = -g / T), then the dx / dW / db GEMMs. Targets equal to
``ignore_index`` give 0 and no gradient."""

from __future__ import annotations

from typing import Optional

import torch

from ligerd.chunked_loss import _engine as E

OP = "fused_linear_selected_log_probs"


class _SelectedLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W, targets, b, temperature, ignore_index):
        lin = E.Linear(x.detach(), W.detach(), b.detach() if b is not None else None, temperature)
        rows = lin.x.shape[0]
        C = E.chunk_rows(OP, rows, lin.V, x.element_size())
        tgt = targets.reshape(-1)
        denom, check = E.target_denom(OP, tgt, lin.V, ignore_index)
        out = E.selected_logps(OP, lin, tgt, ignore_index, C, denom=denom)
        check()
        ctx.save_for_backward(x.detach(), W.detach(), tgt, b.detach() if b is not None else None, denom)
        ctx.args = (temperature, ignore_index, C)
        return out.view(targets.shape)

    @staticmethod
    def backward(ctx, g):
        x, W, tgt, b, denom = ctx.saved_tensors
        temperature, ignore_index, C = ctx.args
        need_dx, need_dw, _, need_db = ctx.needs_input_grad[:4]
        if g is None or not (need_dx or need_dw or need_db):
            return None, None, None, None, None, None
        lin = E.Linear(x, W, b, temperature, need_dx, need_dw, need_db and b is not None)
        E.scatter_grad(lin, tgt, g.reshape(-1), ignore_index, C, denom)
        dx, dW, db = lin.grads()
        return dx, dW, None, db, None, None


@torch.compiler.disable
def fused_linear_selected_log_probs(_input: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                    bias: Optional[torch.Tensor] = None, temperature: float = 1.0,
                                    ignore_index: int = -100) -> torch.Tensor:
    """_input [..., H], weight [V, H], targets [...] token ids, bias [V] or None: fp32 [...]."""
    E.check_linear(OP, _input, weight, bias)
    if temperature == 0:
        E.fail(OP, "temperature cannot be 0")
    shape = tuple(_input.shape[:-1])
    E.check_index(OP, "targets", targets, shape, _input.device)
    return _SelectedLogProbs.apply(_input, weight, targets.long(), bias, float(temperature), int(ignore_index))


class LigerFusedLinearSelectedLogProbs(torch.nn.Module):
    """``forward(_input, lin_weight, targets, bias=None)`` -> fp32 per-token log-probs."""

    def __init__(self, temperature: float = 1.0, ignore_index: int = -100):
        super().__init__()
        self.temperature = temperature
        self.ignore_index = ignore_index

    def forward(self, _input, lin_weight, targets, bias=None):
        return fused_linear_selected_log_probs(_input, lin_weight, targets, bias, self.temperature,
                                               self.ignore_index)
