"""Advantages: how much better an action was than a baseline. GAE with a learned critic (PPO), and the
critic-free group baselines of RLOO and GRPO, where each prompt's k completions are each other's baseline.

Group layout: rewards (B,) hold B / k prompts x k completions, a prompt's completions in consecutive rows.
"""

from __future__ import annotations

import torch

from rlhf.policy.losses import masked_whiten


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised Advantage Estimation (Schulman et al. 2016): (B, T) per-token rewards and values ->
    (advantages, returns), both (B, T) and 0 on padding.

    delta_t = r_t + gamma V_{t+1} - V_t;  A_t = delta_t + gamma lam A_{t+1};  R_t = A_t + V_t.
    Padding has zero reward and value, so the episode ends at the last real token.
    """
    rewards, values = rewards * mask, values * mask
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)  # (B,) A_{t+1}
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    advantages = advantages * mask
    returns = (advantages + values) * mask
    return advantages, returns


def whiten_advantages(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero-mean, unit-variance advantages over the batch's real tokens (padding stays 0)."""
    return masked_whiten(advantages, mask, shift_mean=True)


def _groups(rewards: torch.Tensor, k: int) -> torch.Tensor:
    if k < 2 or rewards.dim() != 1 or rewards.numel() % k:
        raise ValueError(f"need a (B,) reward vector with B a multiple of k >= 2, got shape {tuple(rewards.shape)} and k={k}")
    return rewards.view(-1, k)  # (B / k, k)


def rloo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024, eq. 4): A_i = R_i - mean_{j != i} R_j within a group.

    (B,) -> (B,). The baseline excludes the sample itself, so it stays unbiased; equal to
    k / (k - 1) * (R_i - mean_j R_j).
    """
    g = _groups(rewards, k)  # (G, k)
    baseline = (g.sum(-1, keepdim=True) - g) / (k - 1)  # (G, k) mean of the other k - 1
    return (g - baseline).reshape(-1)


def grpo_advantages(rewards: torch.Tensor, k: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """Group-relative advantages (Shao et al. 2024, sec. 4.1.2): A_i = (R_i - mean(R)) / (std(R) + eps).

    (B,) -> (B,). std is the sample (Bessel-corrected) std of the group, as in TRL; scale=false keeps
    only the mean-centering (Dr. GRPO, Liu et al. 2025), which does not up-weight near-unanimous groups.
    """
    g = _groups(rewards, k)  # (G, k)
    centred = g - g.mean(-1, keepdim=True)
    if scale:
        centred = centred / (g.std(-1, keepdim=True) + eps)
    return centred.reshape(-1)
