"""One PPO step as numbered phases, plus the exact-resume state (see `rlhf.ppo.train` for the loop).

1 rollout -> 2 score -> 3 old log-probs, values, reference log-probs -> 4 KL-shaped reward ->
5 GAE + whitening -> 6 K epochs x minibatches (grad accumulation, clipping, non-finite guard) ->
7 KL controller update + metrics.
"""

from __future__ import annotations

import logging
import math
import random
import time
from typing import Any, Sequence

import numpy as np
import torch

from rlhf.models.reference import ReferencePolicy
from rlhf.models.value_head import PolicyWithValueHead
from rlhf.ppo.config import PPOConfig
from rlhf.ppo.experience import Experience
from rlhf.ppo.gae import compute_gae, whiten_advantages
from rlhf.ppo.kl_control import make_kl_controller
from rlhf.ppo.losses import (
    clipped_value_loss, entropy_from_logits, explained_variance, kl_per_token, logprobs_from_logits, masked_mean,
    ppo_policy_loss, shaped_rewards,
)
from rlhf.ppo.rollout import forward_experience, generate_rollout, process_scores, score_rollout
from rlhf.reward.functions import RewardFunction
from rlhf.types import Prompt

log = logging.getLogger(__name__)


class PPOTrainer:
    def __init__(
        self, cfg: PPOConfig, model: PolicyWithValueHead, tokenizer, prompts: Sequence[Prompt], reward_fn: RewardFunction
    ):
        if not prompts:
            raise ValueError("PPO needs at least one prompt")
        self.cfg, self.model, self.tokenizer, self.prompts, self.reward_fn = cfg, model, tokenizer, list(prompts), reward_fn
        model.eval()  # dropout off for the whole run: old and new log-probs must come from the same function
        self.reference = ReferencePolicy(model.policy)  # before any update: a frozen copy when LoRA is off
        self.params = [p for p in model.parameters() if p.requires_grad]
        value_ids = {id(p) for p in model.value_head.parameters()}
        groups = [
            {"params": [p for p in self.params if id(p) not in value_ids], "lr": cfg.lr},
            {"params": [p for p in self.params if id(p) in value_ids], "lr": cfg.lr * cfg.value_lr_mult},
        ]
        groups = [g for g in groups if g["params"]]
        try:  # the fused kernel is ~2x faster than the per-tensor loop on CPU
            self.optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, fused=True)
        except (RuntimeError, TypeError):
            self.optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        self.kl_ctl = make_kl_controller(
            cfg.kl_coef, cfg.adaptive_kl, cfg.target_kl, cfg.kl_horizon, (cfg.kl_coef_min, cfg.kl_coef_max))
        self.sample_gen = torch.Generator().manual_seed(cfg.seed)
        self.shuffle_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.step_count = 0
        self.data_pos = 0  # prompts consumed so far; the order is a fresh seeded permutation per pass

    # ------------------------------------------------------------------ data
    def next_prompts(self) -> list[Prompt]:
        n, out = len(self.prompts), []
        for _ in range(self.cfg.batch_size):
            epoch, i = divmod(self.data_pos, n)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch))
            out.append(self.prompts[int(perm[i])])
            self.data_pos += 1
        return out

    # ------------------------------------------------------------------ one step
    def step(self) -> dict[str, Any]:
        cfg, t_start = self.cfg, time.perf_counter()
        batch = self.next_prompts()

        # 1. Rollout: sample with the KV cache.
        rollout = generate_rollout(
            self.model, self.tokenizer, [p.prompt for p in batch], cfg.sampling, cfg.max_prompt_tokens,
            cfg.system_prompt, self.sample_gen,
        )
        t_gen = time.perf_counter()

        # 2. Score: the reward at the last generated token, optionally normalised / whitened / clipped.
        raw = score_rollout(self.reward_fn, rollout)
        norm = getattr(self.reward_fn, "normalization", None) if cfg.normalize_reward else None
        scores = process_scores(raw, rollout.finished, norm, cfg.whiten_rewards, cfg.reward_clip, cfg.missing_eos_penalty)
        t_score = time.perf_counter()

        # 3. Old log-probs and values (one forward), reference log-probs (adapter off).
        chunk = cfg.forward_batch_size or cfg.micro_batch_size
        fwd = forward_experience(self.model, self.reference, rollout, cfg.sampling.temperature, chunk)
        mask = rollout.response_mask

        # 4. KL-shaped per-token reward.
        beta = self.kl_ctl.value
        kl_tokens = kl_per_token(fwd.old_logprobs, fwd.ref_logprobs, cfg.kl_estimator) * mask  # (B, T)
        rewards = shaped_rewards(scores, kl_tokens, mask, beta)

        # 5. Advantages.
        advantages, returns = compute_gae(rewards, fwd.values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = whiten_advantages(advantages, mask)
        exp = Experience(
            rollout.sequences, rollout.attention_mask, mask, fwd.old_logprobs, fwd.ref_logprobs, fwd.values,
            rewards, advantages, returns, rollout.prompt_len,
        )
        t_fwd = time.perf_counter()

        # 6. K epochs x minibatches.
        train = self.optimise(exp)
        t_train = time.perf_counter()

        # 7. KL controller and metrics.
        kl_k1 = ((fwd.old_logprobs - fwd.ref_logprobs) * mask).sum(-1)  # (B,) per-response KL estimate
        kl_mean = float(kl_k1.mean())
        if math.isfinite(kl_mean):
            self.kl_ctl.update(kl_mean, len(batch))
        self.step_count += 1
        n_tokens = float(mask.sum())
        gen_s = t_gen - t_start
        metrics: dict[str, Any] = {
            "step": self.step_count,
            "episodes": self.step_count * cfg.batch_size,
            "reward/raw_mean": float(raw.mean()),
            "reward/raw_std": float(raw.std()) if raw.numel() > 1 else 0.0,
            "reward/normalized_mean": float(scores.mean()),
            "reward/shaped_return": float(rewards.sum(-1).mean()),
            "kl/mean": kl_mean,
            f"kl/{cfg.kl_estimator}_mean": float(kl_tokens.sum(-1).mean()),
            "kl/beta": beta,
            "entropy": float(masked_mean(fwd.entropy, mask)),
            "value/explained_variance": float(explained_variance(fwd.values, returns, mask)),
            "response/length_mean": n_tokens / len(batch),
            "response/eos_fraction": float(rollout.finished.float().mean()),
            **train,
            "tokens_per_s": n_tokens / gen_s if gen_s > 0 else 0.0,
            "episodes_per_s": len(batch) / (t_train - t_start),
            "time/generate": gen_s,
            "time/score": t_score - t_gen,
            "time/forward": t_fwd - t_score,
            "time/train": t_train - t_fwd,
            "time/step": t_train - t_start,
        }
        return metrics

    # ------------------------------------------------------------------ optimisation
    def minibatch_forward(self, mb: Experience) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """New log-probs, values and (only when the bonus is on) entropy for a minibatch: (b, T) each."""
        out = self.model(mb.sequences, mb.attention_mask, mb.prompt_len)
        logprobs = logprobs_from_logits(out.logits, mb.responses, self.cfg.sampling.temperature)
        entropy = entropy_from_logits(out.logits, self.cfg.sampling.temperature) if self.cfg.ent_coef > 0 else None
        return logprobs, out.values, entropy

    def optimise(self, exp: Experience) -> dict[str, float]:
        cfg = self.cfg
        sums: dict[str, float] = {}
        updates = skipped = 0
        grad_norms: list[float] = []
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(len(exp), generator=self.shuffle_gen)
            for mb_idx in perm.split(cfg.mini_batch_size):
                self.optimizer.zero_grad(set_to_none=True)
                finite, stats = True, []
                for micro_idx in mb_idx.split(cfg.micro_batch_size):
                    mb = exp.select(micro_idx)
                    logprobs, values, entropy = self.minibatch_forward(mb)
                    m = mb.response_mask
                    pl = ppo_policy_loss(logprobs, mb.old_logprobs, mb.advantages, m, cfg.clip_range)
                    vl = clipped_value_loss(values, mb.old_values, mb.returns, m, cfg.clip_range_value)
                    loss = pl.loss + cfg.vf_coef * vl.loss
                    if entropy is not None:
                        ent = masked_mean(entropy, m)
                        loss = loss - cfg.ent_coef * ent
                    if not torch.isfinite(loss):
                        finite = False  # non-finite guard: drop this whole minibatch update
                        break
                    (loss * len(micro_idx) / len(mb_idx)).backward()
                    stats.append({
                        "loss/policy": pl.loss.item(), "loss/value": vl.loss.item(), "loss/total": loss.item(),
                        "policy/clipfrac": pl.clipfrac.item(), "policy/approx_kl": pl.approx_kl.item(),
                        "policy/ratio_mean": float(masked_mean(pl.ratio, m)), "value/clipfrac": vl.clipfrac.item(),
                    } | ({"policy/entropy": ent.item()} if entropy is not None else {}))
                if finite:
                    norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                    finite = bool(torch.isfinite(norm))
                if not finite:
                    self.optimizer.zero_grad(set_to_none=True)
                    skipped += 1
                    log.warning("step %d: non-finite loss or gradient; minibatch update skipped", self.step_count + 1)
                    continue
                self.optimizer.step()
                updates += 1
                grad_norms.append(float(norm))
                for s in stats:
                    for k, v in s.items():
                        sums[k] = sums.get(k, 0.0) + v / len(stats)
        out = {k: v / updates for k, v in sums.items()} if updates else {}
        out |= {
            "grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else float("nan"),
            "optimizer_steps": updates,
            "nonfinite/skipped_updates": skipped,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        return out

    # ------------------------------------------------------------------ exact resume
    def state_dict(self) -> dict[str, Any]:
        trainable = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        return {
            "step": self.step_count,
            "data_pos": self.data_pos,
            "trainable": trainable,
            "value_head": self.model.value_head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "kl_ctl": self.kl_ctl.state_dict(),
            "rng": {
                "sample": self.sample_gen.get_state(), "shuffle": self.shuffle_gen.get_state(),
                "torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        named = dict(self.model.named_parameters())
        missing = [n for n, p in named.items() if p.requires_grad and n not in state["trainable"]]
        if missing:
            raise ValueError(f"checkpoint does not match the model: {len(missing)} trainable tensors missing, e.g. {missing[0]}")
        with torch.no_grad():
            for n, t in state["trainable"].items():
                named[n].copy_(t)
        self.model.value_head.load_state_dict(state["value_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        rng = state["rng"]
        self.sample_gen.set_state(rng["sample"])
        self.shuffle_gen.set_state(rng["shuffle"])
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        self.step_count, self.data_pos = int(state["step"]), int(state["data_pos"])
