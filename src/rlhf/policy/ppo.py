"""PPO (Schulman et al. 2017) for language models (Ziegler et al. 2019): a value head on the policy trunk,
a per-token KL-shaped reward, GAE, and the clipped policy + clipped value loss with an entropy bonus.
Only the advantage and the loss live here; rollout, scoring, KL control and the loop are shared."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf.models.value_head import PolicyWithValueHead
from rlhf.policy.advantages import compute_gae, whiten_advantages
from rlhf.policy.config import OnlineConfig
from rlhf.policy.experience import Experience, Scored
from rlhf.policy.losses import clipped_value_loss, explained_variance, masked_mean, ppo_policy_loss, shaped_rewards


@dataclass(frozen=True)
class PPOConfig(OnlineConfig):
    out_dir: str = "runs/ppo"
    """Output folder: adapter/ (or policy/), value_head.safetensors, metrics.jsonl, tb/, ppo.yaml, checkpoint.pt."""
    separate_critic: bool = False
    """Give the value function its own trunk (a copy, trained in full) instead of sharing the policy's."""
    value_lr_mult: float = 10.0
    """The value head learns at lr x this: it starts at zero and must reach the reward scale fast."""
    clip_range_value: float = 0.2
    """Value clip: new values stay within +-this of the rollout values in the loss."""
    vf_coef: float = 0.1
    """c1: weight of the value loss."""
    ent_coef: float = 0.0
    """c2: weight of the entropy bonus (subtracted from the loss)."""
    gamma: float = 1.0
    """GAE discount."""
    lam: float = 0.95
    """GAE lambda."""
    whiten_advantages: bool = True
    """Normalise advantages to zero mean and unit variance over each batch."""


class PPO:
    name, group_size, uses_values = "ppo", 1, True

    def __init__(self, cfg: PPOConfig):
        self.cfg = cfg
        self.uses_entropy = cfg.ent_coef > 0

    def param_groups(self, model: PolicyWithValueHead) -> list[dict]:
        value_ids = {id(p) for p in model.value_head.parameters()}
        params = [p for p in model.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if id(p) not in value_ids], "lr": self.cfg.lr},
            {"params": [p for p in params if id(p) in value_ids], "lr": self.cfg.lr * self.cfg.value_lr_mult},
        ]

    def advantages(self, s: Scored) -> tuple[Experience, dict[str, float]]:
        cfg, mask, r = self.cfg, s.mask, s.rollout
        rewards = shaped_rewards(s.scores, s.kl, mask, s.beta)  # (B, T): -beta KL_t, plus the score on the last token
        advantages, returns = compute_gae(rewards, s.values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = whiten_advantages(advantages, mask)
        exp = Experience(
            r.sequences, r.attention_mask, mask, s.old_logprobs, s.ref_logprobs, advantages, r.prompt_len,
            old_values=s.values, returns=returns,
        )
        return exp, {
            "reward/shaped_return": float(rewards.sum(-1).mean()),
            "value/explained_variance": float(explained_variance(s.values, returns, mask)),
        }

    def loss(self, mb: Experience, logprobs, values, entropy) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, m = self.cfg, mb.response_mask
        pl = ppo_policy_loss(logprobs, mb.old_logprobs, mb.advantages, m, cfg.clip_range)
        vl = clipped_value_loss(values, mb.old_values, mb.returns, m, cfg.clip_range_value)
        loss = pl.loss + cfg.vf_coef * vl.loss
        stats = {}
        if entropy is not None:
            ent = masked_mean(entropy, m)
            loss = loss - cfg.ent_coef * ent
            stats["policy/entropy"] = ent.item()
        return loss, stats | {
            "loss/policy": pl.loss.item(), "loss/value": vl.loss.item(), "loss/total": loss.item(),
            "policy/clipfrac": pl.clipfrac.item(), "policy/approx_kl": pl.approx_kl.item(),
            "policy/ratio_mean": float(masked_mean(pl.ratio, m)), "value/clipfrac": vl.clipfrac.item(),
        }
