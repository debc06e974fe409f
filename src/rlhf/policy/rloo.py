"""RLOO (Ahmadian et al. 2024): k completions per prompt, each one's baseline is the mean reward of the
other k - 1, no value model. The reward is sequence-level, score - beta * KL (k1 summed over the response,
as PPO's per-token penalty sums to), and the whole completion is one action in a (clipped) REINFORCE loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf.models.policy import CausalPolicy
from rlhf.policy.advantages import rloo_advantages
from rlhf.policy.config import OnlineConfig
from rlhf.policy.experience import Experience, Scored
from rlhf.policy.losses import masked_whiten, sequence_policy_loss


@dataclass(frozen=True)
class RLOOConfig(OnlineConfig):
    out_dir: str = "runs/rloo"
    """Output folder: adapter/ (or policy/), metrics.jsonl, tb/, rloo.yaml, checkpoint.pt, result.json."""
    k: int = 4
    """Completions sampled per prompt (the group); batch_size must be a multiple of k."""
    normalize_advantages: bool = False
    """Also standardise the leave-one-out advantages over the whole batch (TRL's `normalize_advantages`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 2 or self.batch_size % self.k:
            raise ValueError(f"k must be >= 2 and divide batch_size ({self.batch_size}), got k={self.k}")


class RLOO:
    name, uses_values, uses_entropy = "rloo", False, False

    def __init__(self, cfg: RLOOConfig):
        self.cfg, self.group_size = cfg, cfg.k

    def param_groups(self, model: CausalPolicy) -> list[dict]:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": self.cfg.lr}]

    def advantages(self, s: Scored) -> tuple[Experience, dict[str, float]]:
        rewards = s.penalized  # (B,) score - beta * sum_t KL_t
        adv = rloo_advantages(rewards, self.cfg.k)  # (B,)
        if self.cfg.normalize_advantages:
            adv = masked_whiten(adv, torch.ones_like(adv))
        r = s.rollout
        exp = Experience(r.sequences, r.attention_mask, s.mask, s.old_logprobs, s.ref_logprobs, adv, r.prompt_len)
        return exp, group_metrics(rewards, adv, self.cfg.k)

    def loss(self, mb: Experience, logprobs, values, entropy) -> tuple[torch.Tensor, dict[str, float]]:
        pl = sequence_policy_loss(logprobs, mb.old_logprobs, mb.advantages, mb.response_mask, self.cfg.clip_range)
        return pl.loss, {
            "loss/policy": pl.loss.item(), "policy/clipfrac": pl.clipfrac.item(),
            "policy/approx_kl": pl.approx_kl.item(), "policy/ratio_mean": float(pl.ratio.mean()),
        }


def group_metrics(rewards: torch.Tensor, advantages: torch.Tensor, k: int) -> dict[str, float]:
    """What a group baseline sees: the KL-shaped return, the spread inside groups, and groups with no signal."""
    g = rewards.view(-1, k)  # (G, k)
    return {
        "reward/shaped_return": float(rewards.mean()),
        "reward/group_std_mean": float(g.std(-1).mean()),
        "reward/flat_groups": float((g.max(-1).values == g.min(-1).values).float().mean()),
        "advantage/abs_mean": float(advantages.abs().mean()),
    }
