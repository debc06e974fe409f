"""The policy optimisers' pure maths: masked statistics, log-probs, entropy, KL estimators, and the
losses of PPO (clipped policy and value), RLOO (sequence-level clip), GRPO (per-sequence mean) and DPO.

Shapes: B sequences (or pairs), T response positions, V vocabulary. `mask` is (B, T) float, 1 on real
response tokens. All functions are pure (no module state) and unit-tested against hand values.
Advantages (GAE, RLOO, GRPO) live in `rlhf.policy.advantages`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

KLEstimator = Literal["k1", "k2", "k3"]
Aggregation = Literal["token", "sequence"]
DPOLossType = Literal["sigmoid", "ipo"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over positions where mask is 1 (all dims, or along `dim`)."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over masked positions (Bessel-corrected by default)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    n = mask.sum()
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over masked positions; `shift_mean=False` adds the mean back (scale only)."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log pi(token): (B, T, V) logits, (B, T) ids -> (B, T).

    Divides by the sampling temperature so ratios/KL are taken under the distribution actually
    sampled from; gather - logsumexp avoids materialising a (B, T, V) log-softmax.
    """
    logits = logits.float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of the next-token distribution: (B, T, V) -> (B, T); H = logsumexp(z) - sum softmax(z) z."""
    logits = logits.float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    return torch.logsumexp(logits, dim=-1) - (logits.softmax(-1) * logits).sum(-1)


def logprobs_and_entropy(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """`logprobs_from_logits` and `entropy_from_logits` sharing one logsumexp: (B, T, V) -> (B, T), (B, T)."""
    logits = logits.float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (B, T, 1)
    logprobs = (logits.gather(-1, tokens.unsqueeze(-1)) - lse).squeeze(-1)
    if torch.is_grad_enabled():
        weighted = torch.exp(logits - lse) * logits
    else:  # one (B, T, V) temporary instead of three: this runs on whole rollout chunks
        weighted = (logits - lse).exp_().mul_(logits)
    entropy = lse.squeeze(-1) - weighted.sum(-1)
    return logprobs, entropy


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from sampled tokens: (B, T) -> (B, T).

    Schulman, "Approximating KL divergence" (2020): with log r = ref - logp,
    k1 = -log r (unbiased, high variance), k2 = (log r)^2 / 2 (biased, low variance),
    k3 = (r - 1) - log r (unbiased, low variance, always >= 0).
    """
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; use k1, k2 or k3")


class PolicyLoss(NamedTuple):
    loss: torch.Tensor  # () scalar
    clipfrac: torch.Tensor  # () share of tokens (sequences for RLOO) where the clipped term was active
    approx_kl: torch.Tensor  # () 0.5 * E[(log pi - log pi_old)^2], the old->new policy drift
    ratio: torch.Tensor  # (B, T) pi / pi_old per token, or (B,) per sequence for RLOO


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
    aggregation: Aggregation = "token",
) -> PolicyLoss:
    """PPO-clip (Schulman et al. 2017): E[max(-A r, -A clip(r, 1-eps, 1+eps))] per token.

    logprobs/old_logprobs/mask (B, T); advantages (B, T), or (B, 1) for one advantage per sequence (GRPO).
    aggregation "token": the mean over all real tokens of the batch (PPO); "sequence": the mean over each
    response's tokens, then over responses (GRPO, Shao et al. 2024, eq. 3), so long and short answers weigh the same.
    """
    log_ratio = logprobs - old_logprobs  # (B, T)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    per_token = torch.maximum(unclipped, clipped)  # (B, T)
    if aggregation == "token":
        loss = masked_mean(per_token, mask)
    elif aggregation == "sequence":
        loss = masked_mean(per_token, mask, dim=-1).mean()
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}; use token or sequence")
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = 0.5 * masked_mean(log_ratio**2, mask)
    return PolicyLoss(loss, clipfrac, approx_kl, ratio.detach())


def sequence_policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> PolicyLoss:
    """RLOO's REINFORCE with the whole completion as one action (Ahmadian et al. 2024), clipped for reuse.

    logprobs/old_logprobs/mask (B, T), advantages (B,). r = pi(y) / pi_old(y) = exp(sum_t log-ratio_t);
    the loss is mean_b max(-A r, -A clip(r, 1-eps, 1+eps)). At r = 1 its gradient is -A * grad log pi(y).
    """
    log_ratio = ((logprobs - old_logprobs) * mask).sum(-1)  # (B,)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        clipfrac = (clipped > unclipped).float().mean()
        approx_kl = 0.5 * (log_ratio**2).mean()
    return PolicyLoss(loss, clipfrac, approx_kl, ratio.detach())


class ValueLoss(NamedTuple):
    loss: torch.Tensor  # ()
    clipfrac: torch.Tensor  # () share of tokens where the clipped error was the larger


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> ValueLoss:
    """0.5 * E[max((V - R)^2, (V_clip - R)^2)], V_clip = V_old + clip(V - V_old, +-eps); all (B, T)."""
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    err = (values - returns) ** 2
    err_clipped = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((err_clipped > err).float(), mask)
    return ValueLoss(loss, clipfrac)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var(R - V) / Var(R) over masked tokens: 1 is a perfect critic, 0 predicts the mean."""
    var_r = masked_var(returns, mask)
    return 1.0 - masked_var(returns - values, mask) / var_r.clamp(min=1e-8)


def shaped_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-token reward (Ziegler et al. 2019): -beta * KL_t everywhere, plus the score at the last real token.

    scores (B,), kl (B, T), mask (B, T) -> (B, T). Responses are right-padded, so the last real
    token is at index len - 1.
    """
    rewards = -beta * kl * mask  # (B, T)
    last = (mask.sum(-1).long() - 1).clamp(min=0)  # (B,)
    return rewards.scatter_add(1, last.unsqueeze(-1), scores.unsqueeze(-1).to(rewards.dtype))


def sequence_logprobs(logprobs: torch.Tensor, mask: torch.Tensor, average: bool = False) -> torch.Tensor:
    """log pi(y) of each response: (B, T) per-token log-probs -> (B,) sum (or mean) over real tokens."""
    total = (logprobs * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1) if average else total


def dpo_losses(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    loss_type: DPOLossType = "sigmoid",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Per-pair DPO loss from sequence log-probs, all (B,) -> (B,).

    h = (log pi(y_c) - log pi_ref(y_c)) - (log pi(y_r) - log pi_ref(y_r)).
    sigmoid: -log sigma(beta h) (Rafailov et al. 2023, eq. 7); with label_smoothing eps (conservative
    DPO, Mitchell 2023) the label is flipped with probability eps: -(1-eps) log sigma(beta h) - eps log sigma(-beta h).
    ipo: (h - 1 / (2 beta))^2 (Azar et al. 2023, eq. 17): regresses the log-ratio gap to a fixed target
    instead of pushing it to infinity, so it does not overfit deterministic preferences.
    """
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)  # (B,)
    if loss_type == "sigmoid":
        return -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    if loss_type == "ipo":
        return (h - 1.0 / (2.0 * beta)) ** 2
    raise ValueError(f"unknown DPO loss type {loss_type!r}; use sigmoid or ipo")


def implicit_rewards(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO's implicit reward r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)): (B,) -> (B,), no gradient."""
    return (beta * (policy_logps - ref_logps)).detach()
