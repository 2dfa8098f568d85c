"""DPO, ORPO, CPO and SimPO: Liger-Kernel 0.8.5's ``LigerFusedLinear{DPO,ORPO,CPO,SimPO}Loss`` and
``...Function.apply`` (same argument order, defaults and returns), on ligerd's chunk loop
(``_paired``). ``compiled`` and ``chunk_size`` are accepted for compatibility and ignored: the
chunk comes from the memory budget (``_engine``), and the chunk loop is not traced.

The preference terms (chosen/rejected are the per-sequence log-probs, n the number of pairs):
  DPO (Rafailov et al. 2023) and its variants, on the log-ratios against the reference model
      (0 without one), d = beta * ((c - c_ref) - (r - r_ref)):
      sigmoid  -logsigmoid(d)                hinge   relu(1 - d)
      exo_pair q_w (log q_w - log(1-eps)) + q_l (log q_l - log eps), q = sigmoid(+-d)
      nca_pair -logsigmoid(beta c') - (logsigmoid(-beta c') + logsigmoid(-beta r')) / 2
      robust   (-(1-ls) logsigmoid(d) + ls logsigmoid(-d)) / (1 - 2 ls)
      bco_pair -logsigmoid(beta c') - logsigmoid(-beta r')
      sppo_hard (c' - 1/(2 beta))^2 + (r' + 1/(2 beta))^2
      apo_zero 1 - sigmoid(beta c') + sigmoid(beta r')
      apo_down sigmoid(beta c') + 1 - sigmoid(d)
      discopop -logsigmoid(d) (1 - m) + exp(-d) m, m = sigmoid(d / tau)
    (c' = c - c_ref, r' = r - r_ref), summed over pairs / n; returns the rewards beta c', beta r'.
  ORPO (Hong et al. 2024): -beta * logsigmoid(log odds(c) - log odds(r)) summed / n, plus the NLL.
  CPO (Xu et al. 2024): -(1-ls) logsigmoid(beta (c - r)) - ls logsigmoid(-beta (c - r)), / n.
  SimPO (Meng et al. 2024): as CPO with the margin gamma: logits beta (c - r) - gamma.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ligerd.chunked_loss import _paired

DPO_LOSS_TYPES = ("sigmoid", "hinge", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "apo_zero",
                  "apo_down", "discopop")


def _check_dpo(loss_type, label_smoothing):
    if loss_type == "ipo":
        raise NotImplementedError(
            "loss_type='ipo' is not supported (as in Liger-Kernel): it needs per-sample completion-token "
            "counts to length-normalize the squared margin.")
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"Unsupported loss_type: {loss_type}. Supported types are: {', '.join(DPO_LOSS_TYPES)}")
    if loss_type == "exo_pair" and label_smoothing <= 0.0:
        raise ValueError("label_smoothing must be > 0 for loss_type='exo_pair'. The EXO paper recommends 1e-3.")
    if loss_type == "robust" and not (0.0 <= label_smoothing < 0.5):
        raise ValueError(f"label_smoothing must lie in [0.0, 0.5) for loss_type='robust'. Got {label_smoothing}.")


def dpo_preference(chosen, rejected, n_pairs, beta=0.1, ref_chosen_logps=None, ref_rejected_logps=None,
                   loss_type="sigmoid", label_smoothing=0.0, discopop_tau=0.05):
    cr = chosen - ref_chosen_logps if ref_chosen_logps is not None else chosen
    rr = rejected - ref_rejected_logps if ref_rejected_logps is not None else rejected
    chosen_rewards, rejected_rewards = beta * cr, beta * rr
    d = beta * (cr - rr)
    ls = label_smoothing
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(d)
    elif loss_type == "hinge":
        losses = torch.relu(1 - d)
    elif loss_type == "exo_pair":
        eps = torch.tensor(ls, dtype=d.dtype, device=d.device)
        losses = (torch.sigmoid(d) * (F.logsigmoid(d) - torch.log1p(-eps))
                  + torch.sigmoid(-d) * (F.logsigmoid(-d) - torch.log(eps)))
    elif loss_type == "nca_pair":
        losses = (-F.logsigmoid(chosen_rewards) - 0.5 * F.logsigmoid(-chosen_rewards)
                  - 0.5 * F.logsigmoid(-rejected_rewards))
    elif loss_type == "robust":
        losses = (-(1 - ls) * F.logsigmoid(d) + ls * F.logsigmoid(-d)) / (1 - 2 * ls)
    elif loss_type == "bco_pair":
        losses = -F.logsigmoid(chosen_rewards) - F.logsigmoid(-rejected_rewards)
    elif loss_type == "sppo_hard":
        losses = (cr - 0.5 / beta) ** 2 + (rr + 0.5 / beta) ** 2
    elif loss_type == "apo_zero":
        losses = 1 - torch.sigmoid(beta * cr) + torch.sigmoid(beta * rr)
    elif loss_type == "apo_down":
        losses = torch.sigmoid(beta * cr) + 1 - torch.sigmoid(d)
    elif loss_type == "discopop":
        m = torch.sigmoid(d / discopop_tau)
        losses = -F.logsigmoid(d) * (1 - m) + torch.exp(-d) * m
    else:
        _check_dpo(loss_type, ls)
    return losses.sum() / n_pairs, chosen_rewards, rejected_rewards


def orpo_preference(chosen, rejected, n_pairs, beta=0.1):
    log_odds = (chosen - rejected) - (torch.log1p(-torch.exp(chosen)) - torch.log1p(-torch.exp(rejected)))
    ratio = F.logsigmoid(log_odds)
    return (-beta * ratio.sum() / n_pairs, beta * chosen, beta * rejected, ratio.sum() / n_pairs,
            log_odds.sum() / n_pairs)


def cpo_preference(chosen, rejected, n_pairs, beta=0.1, label_smoothing=0.0):
    z = beta * (chosen - rejected)
    loss = (-F.logsigmoid(z) * (1 - label_smoothing) - F.logsigmoid(-z) * label_smoothing).sum() / n_pairs
    return loss, beta * chosen, beta * rejected


def simpo_preference(chosen, rejected, n_pairs, beta=0.1, gamma=0.5, label_smoothing=0.0):
    z = beta * (chosen - rejected) - gamma
    loss = (-F.logsigmoid(z) * (1 - label_smoothing) - F.logsigmoid(-z) * label_smoothing).sum() / n_pairs
    return loss, beta * chosen, beta * rejected


# ---- Functions: Liger's ``...Function.apply`` argument order -----------------------------------

class LigerFusedLinearDPOFunction:
    @staticmethod
    def apply(_input, weight, target, bias=None, ref_input=None, ref_weight=None, ref_bias=None,
              ignore_index=-100, beta=0.1, compute_nll_loss=False, compiled=True, use_ref_model=True,
              average_log_prob=False, chunk_size=1, loss_type="sigmoid", label_smoothing=0.0, discopop_tau=0.05,
              alpha=1.0):
        _check_dpo(loss_type, label_smoothing)
        return _paired.run("fused_linear_dpo", dpo_preference, _input, weight, target, bias,
                           ignore_index=ignore_index, alpha=alpha, beta=beta, compute_nll_loss=compute_nll_loss,
                           use_ref_model=use_ref_model, ref_input=ref_input, ref_weight=ref_weight,
                           ref_bias=ref_bias, average_log_prob=average_log_prob, loss_type=loss_type,
                           label_smoothing=label_smoothing, discopop_tau=discopop_tau)


class LigerFusedLinearORPOFunction:
    @staticmethod
    def apply(_input, weight, target, bias=None, ignore_index=-100, beta=0.1, compute_nll_loss=True,
              nll_target=None, compiled=True, chunk_size=1):
        return _paired.run("fused_linear_orpo", orpo_preference, _input, weight, target, bias,
                           ignore_index=ignore_index, beta=beta, compute_nll_loss=compute_nll_loss,
                           nll_target=nll_target, average_log_prob=True)


class LigerFusedLinearCPOFunction:
    @staticmethod
    def apply(_input, weight, target, bias=None, ignore_index=-100, beta=0.1, alpha=1.0, label_smoothing=0.0,
              compute_nll_loss=True, compiled=True, average_log_prob=False, chunk_size=1):
        return _paired.run("fused_linear_cpo", cpo_preference, _input, weight, target, bias,
                           ignore_index=ignore_index, alpha=alpha, beta=beta, compute_nll_loss=compute_nll_loss,
                           average_log_prob=average_log_prob, label_smoothing=label_smoothing)


class LigerFusedLinearSimPOFunction:
    @staticmethod
    def apply(_input, weight, target, bias=None, ignore_index=-100, beta=0.1, alpha=1.0, label_smoothing=0.0,
              compute_nll_loss=False, compiled=True, gamma=0.5, chunk_size=1):
        return _paired.run("fused_linear_simpo", simpo_preference, _input, weight, target, bias,
                           ignore_index=ignore_index, alpha=alpha, beta=beta, compute_nll_loss=compute_nll_loss,
                           average_log_prob=True, label_smoothing=label_smoothing, gamma=gamma)


# ---- Modules: ``forward(lin_weight, _input, target, bias=None, ...)`` (weight first) -------------

class LigerFusedLinearDPOLoss(torch.nn.Module):
    _SUPPORTED_LOSS_TYPES = set(DPO_LOSS_TYPES)

    def __init__(self, ignore_index: int = -100, beta: float = 0.1, alpha: float = 1.0,
                 compute_nll_loss: bool = False, compiled: bool = True, use_ref_model: bool = True,
                 average_log_prob: bool = False, chunk_size: int = 1, loss_type: str = "sigmoid",
                 label_smoothing: float = 0.0, discopop_tau: float = 0.05):
        super().__init__()
        if loss_type not in self._SUPPORTED_LOSS_TYPES:
            raise ValueError(f"Unsupported loss_type: {loss_type}. Supported types are: {self._SUPPORTED_LOSS_TYPES}")
        _check_dpo(loss_type, label_smoothing)
        self.ignore_index = ignore_index
        self.beta = beta
        self.alpha = alpha
        self.compute_nll_loss = compute_nll_loss
        self.compiled = compiled
        self.use_ref_model = use_ref_model
        self.average_log_prob = average_log_prob
        self.chunk_size = chunk_size
        self.loss_type = loss_type
        self.label_smoothing = label_smoothing
        self.discopop_tau = discopop_tau

    def forward(self, lin_weight, _input, target, bias=None, ref_input=None, ref_weight=None, ref_bias=None):
        return LigerFusedLinearDPOFunction.apply(
            _input, lin_weight, target, bias, ref_input, ref_weight, ref_bias, self.ignore_index, self.beta,
            self.compute_nll_loss, self.compiled, self.use_ref_model, self.average_log_prob, self.chunk_size,
            self.loss_type, self.label_smoothing, self.discopop_tau, self.alpha)


class LigerFusedLinearORPOLoss(torch.nn.Module):
    def __init__(self, ignore_index: int = -100, beta: float = 0.1, compute_nll_loss: bool = True,
                 compiled: bool = True, chunk_size: int = 1):
        super().__init__()
        self.ignore_index = ignore_index
        self.beta = beta
        self.compute_nll_loss = compute_nll_loss
        self.compiled = compiled
        self.chunk_size = chunk_size

    def forward(self, lin_weight, _input, target, bias=None, nll_target=None):
        return LigerFusedLinearORPOFunction.apply(_input, lin_weight, target, bias, self.ignore_index, self.beta,
                                                  self.compute_nll_loss, nll_target, self.compiled,
                                                  self.chunk_size)


class LigerFusedLinearCPOLoss(torch.nn.Module):
    def __init__(self, ignore_index: int = -100, beta: float = 0.1, alpha: float = 1.0,
                 label_smoothing: float = 0.0, compute_nll_loss: bool = True, compiled: bool = True,
                 average_log_prob: bool = False, chunk_size: int = 1):
        super().__init__()
        self.ignore_index = ignore_index
        self.beta = beta
        self.alpha = alpha
        self.label_smoothing = label_smoothing
        self.compute_nll_loss = compute_nll_loss
        self.compiled = compiled
        self.average_log_prob = average_log_prob
        self.chunk_size = chunk_size

    def forward(self, lin_weight, _input, target, bias=None):
        return LigerFusedLinearCPOFunction.apply(_input, lin_weight, target, bias, self.ignore_index, self.beta,
                                                 self.alpha, self.label_smoothing, self.compute_nll_loss,
                                                 self.compiled, self.average_log_prob, self.chunk_size)


class LigerFusedLinearSimPOLoss(torch.nn.Module):
    def __init__(self, ignore_index: int = -100, beta: float = 0.1, alpha: float = 1.0,
                 label_smoothing: float = 0.0, compute_nll_loss: bool = True, compiled: bool = True,
                 gamma: float = 0.5, chunk_size: int = 1):
        super().__init__()
        self.ignore_index = ignore_index
        self.beta = beta
        self.alpha = alpha
        self.label_smoothing = label_smoothing
        self.compute_nll_loss = compute_nll_loss
        self.compiled = compiled
        self.gamma = gamma
        self.chunk_size = chunk_size

    def forward(self, lin_weight, _input, target, bias=None):
        return LigerFusedLinearSimPOFunction.apply(_input, lin_weight, target, bias, self.ignore_index, self.beta,
                                                   self.alpha, self.label_smoothing, self.compute_nll_loss,
                                                   self.compiled, self.gamma, self.chunk_size)
