"""GRPO (Shao et al. 2024): k completions per prompt, advantages normalised within the group
((R - mean) / std), no value model, a per-token clipped loss averaged per response then over responses.
By default the KL to the reference is in the reward, as for PPO and RLOO; `kl_in_loss` moves it into the
loss as the paper does (k3 per token, weighted by the same controlled beta)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf.models.policy import CausalPolicy
from rlhf.policy.advantages import grpo_advantages
from rlhf.policy.config import OnlineConfig
from rlhf.policy.experience import Experience, Scored
from rlhf.policy.losses import Aggregation, kl_per_token, masked_mean, ppo_policy_loss
from rlhf.policy.rloo import group_metrics


@dataclass(frozen=True)
class GRPOConfig(OnlineConfig):
    out_dir: str = "runs/grpo"
    """Output folder: adapter/ (or policy/), metrics.jsonl, tb/, grpo.yaml, checkpoint.pt, result.json."""
    k: int = 4
    """Completions sampled per prompt (the group, G in the paper); batch_size must be a multiple of k."""
    scale_rewards: bool = True
    """Divide by the group's reward std (the paper); false only centres them (Dr. GRPO, Liu et al. 2025)."""
    loss_aggregation: Aggregation = "sequence"
    """sequence: mean over each response's tokens, then over responses (the paper); token: mean over all tokens (DAPO)."""
    kl_in_loss: bool = False
    """Put beta * KL (k3, per token) in the loss as Shao et al. do, instead of subtracting beta * KL from the reward."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 2 or self.batch_size % self.k:
            raise ValueError(f"k must be >= 2 and divide batch_size ({self.batch_size}), got k={self.k}")
        if self.loss_aggregation not in ("sequence", "token"):
            raise ValueError(f"loss_aggregation must be sequence or token, not {self.loss_aggregation!r}")


class GRPO:
    name, uses_values, uses_entropy = "grpo", False, False

    def __init__(self, cfg: GRPOConfig):
        self.cfg, self.group_size = cfg, cfg.k
        self.beta = cfg.kl_coef  # this step's beta, for the KL term in the loss

    def param_groups(self, model: CausalPolicy) -> list[dict]:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": self.cfg.lr}]

    def advantages(self, s: Scored) -> tuple[Experience, dict[str, float]]:
        self.beta = s.beta
        rewards = s.scores if self.cfg.kl_in_loss else s.penalized  # (B,)
        adv = grpo_advantages(rewards, self.cfg.k, self.cfg.scale_rewards)  # (B,)
        r = s.rollout
        exp = Experience(r.sequences, r.attention_mask, s.mask, s.old_logprobs, s.ref_logprobs, adv, r.prompt_len)
        return exp, group_metrics(rewards, adv, self.cfg.k)

    def loss(self, mb: Experience, logprobs, values, entropy) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, m = self.cfg, mb.response_mask
        pl = ppo_policy_loss(logprobs, mb.old_logprobs, mb.advantages.unsqueeze(-1), m, cfg.clip_range, cfg.loss_aggregation)
        loss, stats = pl.loss, {}
        if cfg.kl_in_loss:
            kl = kl_per_token(logprobs, mb.ref_logprobs, "k3")  # (b, T)
            kl = masked_mean(kl, m, dim=-1).mean() if cfg.loss_aggregation == "sequence" else masked_mean(kl, m)
            loss = loss + self.beta * kl
            stats["loss/kl"] = kl.item()
        return loss, stats | {
            "loss/policy": pl.loss.item(), "loss/total": loss.item(), "policy/clipfrac": pl.clipfrac.item(),
            "policy/approx_kl": pl.approx_kl.item(), "policy/ratio_mean": float(masked_mean(pl.ratio, m)),
        }
