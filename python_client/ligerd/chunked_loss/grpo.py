"""GRPO and its relatives: Liger-Kernel 0.8.5's ``LigerFusedLinearGRPOLoss`` (``forward(_input,
lin_weight, selected_token_ids, attention_mask, advantages, bias=None, ref_per_token_logps=None,
old_per_token_logps=None, ref_input=None, ref_weight=None, ref_bias=None, vllm_is_ratio=None,
num_items_in_batch=None)``) and ``LigerFusedLinearGRPOFunction.apply``, with every loss type Liger
offers: grpo, bnpo, dr_grpo, dapo, cispo, sapo, luspo, vespo; token or sequence importance sampling
(GSPO); the two-sided clip ``delta``; the importance-sampling-corrected KL; vLLM's importance ratio.
This is Liger's fused linear PPO base (``LigerFusedLinearPPOBase``) with GRPO's loss: there is no
other PPO loss in Liger 0.8.5.

Per token, with logp = log softmax(logits / temperature)[selected token] (computed chunk by chunk,
``_engine.selected_sweep``), old = old_per_token_logps (logp detached when absent), ref likewise:
    ratio = exp(logp - old) (token level) or exp(masked mean of logp - old) (sequence level)
    grpo/bnpo/dr_grpo/dapo/luspo: -min(min(ratio, delta) A, clip(ratio, 1-eps_low, 1+eps_high) A)
    cispo: -min(ratio, eps_high).detach() A logp      sapo: -A * 4/tau sigmoid(tau (ratio - 1))
    vespo: -phi A logp, phi a detached per-sequence gamma weight of the sequence ratio
  times vllm_is_ratio (not for vespo), plus beta * (exp(ref - logp) - (ref - logp) - 1) (times the
  ratio with use_bias_correction_kl), then reduced by the loss type's normaliser (see
  docs/chunked_loss.md). Returns (loss, (kl mean if beta != 0, clip ratio)).
``compiled`` and ``chunk_size`` are accepted and ignored (the chunk comes from the memory budget)."""

from __future__ import annotations

import math
import warnings
from typing import Optional

import torch

from ligerd.chunked_loss import _engine as E

OP = "fused_linear_grpo"
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")
_IGNORE = -100  # a selected id of -100 counts as masked out (log-prob 0); every other must be in [0, V)


def k3(log_p, log_q):
    return torch.exp(log_p - log_q) - (log_p - log_q) - 1.0


@torch.no_grad()
def gamma_weights(advantages, log_ratio, mask, is_ratio=None, k_pos=2.0, lambda_pos=3.0, k_neg=3.0,
                  lambda_neg=2.0):
    """VESPO's per-sequence weight phi = w^k exp(lambda (1 - w)) (log-space, clamped), w the
    sequence's importance ratio (times vLLM's)."""
    lo = math.log(1e-8)
    seq = torch.sum(torch.clamp(log_ratio, -20.0, 20.0) * mask, dim=-1, keepdim=True)
    if is_ratio is not None:
        seq = seq + torch.sum(torch.clamp(torch.log(is_ratio), lo, 20.0), dim=-1, keepdim=True)
    log_w = torch.clamp(seq, lo, 20.0)
    w = torch.exp(log_w)
    pos = advantages.unsqueeze(-1) >= 0
    k = torch.where(pos, k_pos, k_neg)
    lam = torch.where(pos, lambda_pos, lambda_neg).clamp(min=1e-4)
    return torch.exp(lam + k * log_w - lam * w).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)


def _sapo(ratio, tau):
    return torch.sigmoid(tau * (ratio - 1)) * 4 / tau


def dapo_normalizer(full_mask, num_items_in_batch=None):
    """Liger's: num_items_in_batch (or the mask's sum, all-reduced) over the world size, at least 1."""
    world = 1
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
    if num_items_in_batch is not None:
        if isinstance(num_items_in_batch, torch.Tensor):
            n = num_items_in_batch.to(device=full_mask.device, dtype=torch.float32)
        else:
            n = torch.as_tensor(float(num_items_in_batch), device=full_mask.device, dtype=torch.float32)
        return torch.clamp(n / world, min=1.0)
    n = full_mask.to(torch.float32).sum()
    if world > 1:
        n = n.clone()
        dist.all_reduce(n, op=dist.ReduceOp.SUM)
    return torch.clamp(n / world, min=1.0)


def grpo_token_loss(lp, mask, adv, full_mask, ref=None, old=None, is_ratio=None, *, beta, epsilon_low,
                    epsilon_high, loss_type, max_completion_length, importance_sampling_level,
                    sapo_temperature_pos, sapo_temperature_neg, delta, use_bias_correction_kl, vespo_k_pos,
                    vespo_lambda_pos, vespo_k_neg, vespo_lambda_neg, normalizer):
    """The loss of some sequences (lp, mask, ref, old: [n, T]; adv: [n]) and their metrics."""
    ref = ref if ref is not None else lp.detach()
    old = old if old is not None else lp.detach()
    log_ratio = lp - old
    if importance_sampling_level == "token":
        log_w = log_ratio
    else:
        log_w = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    coef1 = torch.exp(log_w)
    A = adv.unsqueeze(1)
    if loss_type == "cispo":
        coef2 = torch.clamp(coef1, None, epsilon_high).detach()
        lower, upper = torch.zeros_like(coef1, dtype=torch.bool), coef1 > epsilon_high
        per = -coef2 * A * lp
    elif loss_type == "sapo":
        lower = upper = torch.zeros_like(coef1, dtype=torch.bool)
        Ae = A.expand_as(coef1)
        per = -torch.where(Ae > 0, _sapo(coef1, sapo_temperature_pos), _sapo(coef1, sapo_temperature_neg)) * Ae
    elif loss_type == "vespo":
        lower = upper = torch.zeros_like(coef1, dtype=torch.bool)
        phi = gamma_weights(adv, log_ratio, mask, is_ratio, vespo_k_pos, vespo_lambda_pos, vespo_k_neg,
                            vespo_lambda_neg)
        per = -phi * A * lp
    else:
        lo_b, hi_b = 1 - epsilon_low, 1 + epsilon_high
        coef2 = torch.clamp(coef1, lo_b, hi_b)
        lower, upper = coef1 < lo_b, coef1 > hi_b
        c1 = torch.clamp(coef1, max=delta) if delta is not None else coef1
        per = -torch.min(c1 * A, coef2 * A)
    if is_ratio is not None and loss_type != "vespo":
        per = per * is_ratio
    kl = None
    if beta != 0.0:
        kl = k3(ref, lp)
        if use_bias_correction_kl:
            kl = kl * torch.exp(log_w)
        per = per + beta * kl
    B = full_mask.shape[0]
    if loss_type in ("grpo", "sapo"):
        loss = ((per * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).sum() / B
    elif loss_type == "bnpo":
        loss = (per * mask).sum() / full_mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = (per * mask).sum() / (B * max_completion_length)
    elif loss_type in ("dapo", "cispo", "vespo"):
        loss = (per * mask).sum() / normalizer
    else:  # luspo
        weighted = per * mask.sum(1, keepdim=True)
        loss = weighted.sum() / (B * weighted.shape[1])
    tokens = full_mask.sum().clamp(min=1.0)
    metrics = []
    if kl is not None:
        metrics.append((kl * mask).sum() / tokens)
    clipped = (lower & (A < 0)) | (upper & (A > 0))
    metrics.append((clipped.expand_as(mask) * mask).sum() / tokens)
    return loss, tuple(metrics)


class LigerFusedLinearGRPOFunction:
    @staticmethod
    @torch.compiler.disable
    def apply(_input, weight, selected_token_ids, attention_mask, advantages, bias=None, ref_per_token_logps=None,
              old_per_token_logps=None, ref_input=None, ref_weight=None, ref_bias=None, beta=0.04, epsilon_low=0.2,
              epsilon_high=0.2, loss_type="dapo", max_completion_length=None, importance_sampling_level="token",
              sapo_temperature_pos=1.0, sapo_temperature_neg=1.05, temperature=1.0, compiled=True,
              use_ref_model=True, chunk_size=1, vllm_is_ratio=None, delta=None, use_bias_correction_kl=False,
              vespo_k_pos=2.0, vespo_lambda_pos=3.0, vespo_k_neg=3.0, vespo_lambda_neg=2.0,
              num_items_in_batch=None):
        x = _input
        if importance_sampling_level == "sequence" and loss_type in ("cispo", "sapo", "vespo"):
            raise ValueError(f"Sequence-level importance sampling is not supported for loss_type='{loss_type}'. "
                             "Use importance_sampling_level='token' instead.")
        if importance_sampling_level not in ("token", "sequence"):
            raise ValueError(f"Unknown importance sampling level: {importance_sampling_level}. Possible values "
                             "are 'token' and 'sequence'.")
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"Unknown loss type: {loss_type}")
        if loss_type == "dr_grpo" and max_completion_length is None:
            raise ValueError("max_completion_length must be provided for loss_type 'dr_grpo'")
        if loss_type == "sapo" and min(sapo_temperature_pos, sapo_temperature_neg) <= 0:
            raise ValueError("sapo_temperature must be > 0.")
        if temperature == 0:
            E.fail(OP, "temperature cannot be 0")
        E.check_linear(OP, x, weight, bias)
        if x.dim() != 3:
            E.fail(OP, f"input must be (batch, seq_len, hidden), got shape {tuple(x.shape)}")
        B, T, _ = x.shape
        ids = E.check_index(OP, "selected_token_ids", selected_token_ids, (B, T), x.device)
        if tuple(attention_mask.shape) != (B, T):
            E.fail(OP, f"attention_mask has shape {tuple(attention_mask.shape)}, expected ({B}, {T})")
        if tuple(advantages.shape) != (B,):
            E.fail(OP, f"advantages has shape {tuple(advantages.shape)}, expected ({B},)")
        if use_ref_model:
            if ref_per_token_logps is None and ref_input is None:
                E.fail(OP, "If use_ref_model is True, ref_per_token_logps or ref_input must be provided")
            if ref_per_token_logps is not None and ref_input is not None:
                warnings.warn("Both ref_per_token_logps and ref_input are provided. Using ref_per_token_logps.")
            if ref_per_token_logps is None:
                if ref_weight is None:
                    E.fail(OP, "ref_input needs ref_weight")
                E.check_linear(OP, ref_input, ref_weight, ref_bias, "ref_input", "ref_weight", "ref_bias")
                if tuple(ref_input.shape[:2]) != (B, T):
                    E.fail(OP, f"ref_input has shape {tuple(ref_input.shape)}, expected ({B}, {T}, H)")
        for name, t in (("ref_per_token_logps", ref_per_token_logps), ("old_per_token_logps", old_per_token_logps)):
            if t is not None and tuple(t.shape) != (B, T):
                E.fail(OP, f"{name} has shape {tuple(t.shape)}, expected ({B}, {T})")
        if vllm_is_ratio is not None:
            if vllm_is_ratio.dim() == 1:
                if vllm_is_ratio.shape[0] != B:
                    E.fail(OP, f"vllm_is_ratio shape must be ({B},), got {tuple(vllm_is_ratio.shape)}")
                vllm_is_ratio = vllm_is_ratio.unsqueeze(-1)
            elif vllm_is_ratio.dim() != 2 or vllm_is_ratio.shape[0] != B or vllm_is_ratio.shape[1] not in (1, T):
                E.fail(OP, f"vllm_is_ratio shape must be ({B},), ({B}, 1) or ({B}, {T}), got "
                           f"{tuple(vllm_is_ratio.shape)}")
        opts = dict(beta=beta, epsilon_low=epsilon_low, epsilon_high=epsilon_high, loss_type=loss_type,
                    max_completion_length=max_completion_length,
                    importance_sampling_level=importance_sampling_level,
                    sapo_temperature_pos=sapo_temperature_pos, sapo_temperature_neg=sapo_temperature_neg,
                    delta=delta, use_bias_correction_kl=use_bias_correction_kl, vespo_k_pos=vespo_k_pos,
                    vespo_lambda_pos=vespo_lambda_pos, vespo_k_neg=vespo_k_neg, vespo_lambda_neg=vespo_lambda_neg)
        need = E.needs(x, weight, bias)
        out = {}
        ref_in = (ref_input, ref_weight, ref_bias) if use_ref_model and ref_per_token_logps is None else None
        ref_lp = ref_per_token_logps if use_ref_model else None

        def go():
            return _forward(x, weight, bias, ids, attention_mask, advantages, ref_lp, old_per_token_logps, ref_in,
                            vllm_is_ratio, float(temperature), num_items_in_batch, need, opts, out)

        loss = E.FusedLinearLoss.apply(x, weight, bias, go)
        return loss, out["aux"]


def _forward(x, W, bias, ids, attention_mask, advantages, ref_lp, old_lp, ref_in, is_ratio, temperature,
             num_items_in_batch, need, opts, out):
    B, T, _ = x.shape
    lin = E.Linear(x.detach(), W.detach(), bias.detach() if bias is not None else None, temperature, *need)
    C = E.group_chunk_rows(OP, B * T, lin.V, x.element_size(), T)
    denom, check = E.target_denom(OP, ids, lin.V, _IGNORE)
    mask = attention_mask.detach().to(torch.float32)
    adv = advantages.detach().to(torch.float32)
    if ref_in is not None:
        rx, rW, rb = ref_in
        rlin = E.Linear(rx.detach(), rW.detach(), rb.detach() if rb is not None else None, temperature)
        ref_lp = E.selected_logps(OP, rlin, ids, _IGNORE, E.chunk_rows(OP, B * T, rlin.V, rx.element_size()),
                                  denom=denom).view(B, T)
    ref = ref_lp.detach().to(torch.float32) if ref_lp is not None else None
    old = old_lp.detach().to(torch.float32) if old_lp is not None else None
    isr = is_ratio.detach().to(torch.float32) if is_ratio is not None else None
    normalizer = dapo_normalizer(mask, num_items_in_batch) if opts["loss_type"] in ("dapo", "cispo", "vespo") \
        else None
    per = max(1, C // T) if T else max(B, 1)
    groups = [[(a, min(a + per, B))] for a in range(0, B, per)]

    def group_loss(ranges, lp):
        ((a, b),) = ranges
        return grpo_token_loss(lp, mask[a:b], adv[a:b], mask, ref[a:b] if ref is not None else None,
                               old[a:b] if old is not None else None, isr[a:b] if isr is not None else None,
                               normalizer=normalizer, **opts)

    total, auxes = E.selected_sweep(OP, lin, ids, T, groups, group_loss, _IGNORE, C, denom, check)
    n_metrics = 2 if opts["beta"] != 0.0 else 1
    zero = torch.zeros((), dtype=torch.float32, device=x.device)
    out["aux"] = tuple(torch.stack([a[i] for a in auxes]).sum() if auxes else zero for i in range(n_metrics))
    dx, dW, db = lin.grads()
    return total, dx, dW, db


class LigerFusedLinearGRPOLoss(torch.nn.Module):
    def __init__(self, beta: float = 0.04, compiled: bool = True, use_ref_model: bool = True, chunk_size: int = 1,
                 epsilon_low: float = 0.2, epsilon_high: float = 0.2, loss_type: str = "dapo",
                 max_completion_length: Optional[int] = None, importance_sampling_level: str = "token",
                 sapo_temperature_pos: float = 1.0, sapo_temperature_neg: float = 1.05, temperature: float = 1.0,
                 delta: Optional[float] = None, use_bias_correction_kl: bool = False, vespo_k_pos: float = 2.0,
                 vespo_lambda_pos: float = 3.0, vespo_k_neg: float = 3.0, vespo_lambda_neg: float = 2.0):
        super().__init__()
        if sapo_temperature_pos <= 0:
            raise ValueError(f"sapo_temperature_pos must be positive, got {sapo_temperature_pos}")
        if sapo_temperature_neg <= 0:
            raise ValueError(f"sapo_temperature_neg must be positive, got {sapo_temperature_neg}")
        if delta is not None and delta <= 0:
            raise ValueError(f"delta must be positive, got {delta}")
        self.beta = beta
        self.compiled = compiled
        self.use_ref_model = use_ref_model
        self.chunk_size = chunk_size
        self.epsilon_low = epsilon_low
        self.epsilon_high = epsilon_high
        self.loss_type = loss_type
        self.max_completion_length = max_completion_length
        self.importance_sampling_level = importance_sampling_level
        self.sapo_temperature_pos = sapo_temperature_pos
        self.sapo_temperature_neg = sapo_temperature_neg
        self.temperature = temperature
        self.delta = delta
        self.use_bias_correction_kl = use_bias_correction_kl
        self.vespo_k_pos = vespo_k_pos
        self.vespo_lambda_pos = vespo_lambda_pos
        self.vespo_k_neg = vespo_k_neg
        self.vespo_lambda_neg = vespo_lambda_neg

    def forward(self, _input, lin_weight, selected_token_ids, attention_mask, advantages, bias=None,
                ref_per_token_logps=None, old_per_token_logps=None, ref_input=None, ref_weight=None, ref_bias=None,
                vllm_is_ratio=None, num_items_in_batch=None):
        return LigerFusedLinearGRPOFunction.apply(
            _input, lin_weight, selected_token_ids, attention_mask, advantages, bias, ref_per_token_logps,
            old_per_token_logps, ref_input, ref_weight, ref_bias, self.beta, self.epsilon_low, self.epsilon_high,
            self.loss_type, self.max_completion_length, self.importance_sampling_level, self.sapo_temperature_pos,
            self.sapo_temperature_neg, self.temperature, self.compiled, self.use_ref_model, self.chunk_size,
            vllm_is_ratio, self.delta, self.use_bias_correction_kl, self.vespo_k_pos, self.vespo_lambda_pos,
            self.vespo_k_neg, self.vespo_lambda_neg, num_items_in_batch)
