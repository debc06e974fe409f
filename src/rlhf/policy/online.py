"""One online step (PPO, RLOO, GRPO) as numbered phases, plus the exact-resume state. The loop is `rlhf.policy.train`.

1 rollout (k samples per prompt) -> 2 score -> 3 old log-probs (+ values), reference log-probs ->
(gather) -> 4 KL per token -> 5 the algorithm's KL-shaped reward and advantages -> 6 epochs x minibatches with the
algorithm's loss (grad accumulation, clipping, non-finite guard) -> 7 KL controller update + metrics.
Phases 1-4, 6 and 7 are shared; an algorithm (`OnlineAlgorithm`) supplies only 5 and its loss.

Under N processes (`rlhf.distributed`) each process runs phases 1-3 on its shard of the prompts, then
the shards are gathered: score processing, advantages (whitening, group baselines), the KL the
controller sees and the metrics are computed on the global batch, identically in every process.
Phase 6 gives each process its share of every minibatch; gradients are summed across processes.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Protocol, Sequence

import torch

from rlhf.config import ConfigError
from rlhf.generator import sync_weights
from rlhf.models.policy import CausalPolicy
from rlhf.models.reference import ReferencePolicy
from rlhf.policy.config import OnlineConfig
from rlhf.policy.core import forward_experience, gather_rollout, generate_rollout, process_scores, score_rollout
from rlhf.policy.experience import Experience, Scored
from rlhf.policy.kl_control import make_kl_controller
from rlhf.policy.losses import kl_per_token, masked_mean
from rlhf.policy.runtime import Runtime
from rlhf.policy.state import load_trainable, make_optimizer, restore_rng, rng_state, trainable_state
from rlhf.reward.functions import RewardFunction
from rlhf.types import Prompt

log = logging.getLogger(__name__)


class OnlineAlgorithm(Protocol):
    name: str
    group_size: int  # k completions per prompt (1 for PPO)
    uses_values: bool  # the policy carries a value head
    uses_entropy: bool  # the loss needs the per-token entropy

    def param_groups(self, model: CausalPolicy) -> list[dict]:
        """AdamW parameter groups over the trainable parameters."""

    def advantages(self, s: Scored) -> tuple[Experience, dict[str, float]]:
        """Phase 5: KL-shaped reward -> advantages, as an Experience; plus metrics."""

    def loss(
        self, mb: Experience, logprobs: torch.Tensor, values: torch.Tensor | None, entropy: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Phase 6: the scalar loss of a micro-batch from its new (b, T) log-probs (and values, entropy); plus metrics."""


class OnlineTrainer:
    def __init__(
        self, cfg: OnlineConfig, algo: OnlineAlgorithm, model: CausalPolicy, tokenizer, prompts: Sequence[Prompt],
        reward_fn: RewardFunction, runtime: Runtime | None = None,
    ):
        if not prompts:
            raise ValueError(f"{algo.name} needs at least one prompt")
        self.cfg, self.algo, self.model, self.tokenizer = cfg, algo, model, tokenizer
        self.prompts, self.reward_fn = list(prompts), reward_fn
        self.runtime = runtime or Runtime()
        model.eval()  # dropout off for the whole run: old and new log-probs must come from the same function
        self.reference = ReferencePolicy(model.policy)  # before any update: a frozen copy when LoRA is off
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(algo.param_groups(model), cfg.weight_decay)
        rt = self.runtime
        if rt.world_size > 1 and ((cfg.batch_size // algo.group_size) % rt.world_size or cfg.mini_batch_size % rt.world_size):
            raise ValueError(
                f"{rt.world_size} processes need batch_size / k prompts ({cfg.batch_size // algo.group_size}) and "
                f"mini_batch_size ({cfg.mini_batch_size}) to be multiples of {rt.world_size}")
        # `train_model` (DDP-wrapped under N processes) only for the gradient forward; `model` everywhere else.
        self.train_model, self.optimizer = rt.prepare(self.model, self.optimizer)
        self.kl_ctl = make_kl_controller(
            cfg.kl_coef, cfg.adaptive_kl, cfg.target_kl, cfg.kl_horizon, (cfg.kl_coef_min, cfg.kl_coef_max))
        self.episode_seeds = cfg.episode_seeds or rt.world_size > 1
        self.sample_gen = torch.Generator().manual_seed(cfg.seed)
        self.shuffle_gen = torch.Generator().manual_seed(cfg.seed + 1)
        # PPO's values from the sampler's trunk states, as its old log-probs: one trunk forward fewer per step
        self.values_from_sampler = (algo.uses_values and cfg.old_logprobs == "sampler"
                                    and getattr(model, "critic", None) is None)
        self.step_count = 0
        self.data_pos = 0  # prompts consumed so far; the order is a fresh seeded permutation per pass

    @property
    def total_steps(self) -> int:
        return self.cfg.max_steps

    # ------------------------------------------------------------------ data
    def next_prompts(self, n: int) -> list[Prompt]:
        out = []
        for _ in range(n):
            epoch, i = divmod(self.data_pos, len(self.prompts))
            perm = torch.randperm(len(self.prompts), generator=torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch))
            out.append(self.prompts[int(perm[i])])
            self.data_pos += 1
        return out

    def sampling_generators(self, first: int, n: int) -> torch.Generator | list[torch.Generator]:
        """The batch's sampling stream, or (episode_seeds) one generator per episode first..first+n-1 of this step."""
        if not self.episode_seeds:
            return self.sample_gen
        device = next(self.model.parameters()).device
        return [torch.Generator(device).manual_seed((self.cfg.seed * 1_000_003 + self.step_count) * 1_000_003 + first + i)
                for i in range(n)]

    # ------------------------------------------------------------------ one step
    def step(self) -> dict[str, Any]:
        cfg, algo, rt, t_start = self.cfg, self.algo, self.runtime, time.perf_counter()
        k = algo.group_size
        prompts = self.next_prompts(cfg.batch_size // k)  # the global batch's prompts, the same in every process
        mine = rt.shard(len(prompts))
        batch = [p for p in prompts[mine] for _ in range(k)]  # a prompt's k samples adjacent

        # 1. Rollout: sample this process's share with the KV cache.
        rollout = generate_rollout(
            self.model, self.tokenizer, [p.prompt for p in batch], cfg.sampling, cfg.max_prompt_tokens,
            cfg.system_prompt, self.sampling_generators(mine.start * k, len(batch)), cfg.old_logprobs == "sampler",
            with_hidden=self.values_from_sampler,
        )
        t_gen = time.perf_counter()

        # 2. Score: the reward of each completion.
        raw = score_rollout(self.reward_fn, rollout)
        t_score = time.perf_counter()

        # 3. Old log-probs (and values) from one forward, or the sampler's; reference log-probs with the adapter off.
        chunk = cfg.forward_batch_size or cfg.micro_batch_size
        fwd = forward_experience(self.model, self.reference, rollout, cfg.sampling.temperature, chunk)

        # Global batch: every process's shard, in rank order (the identity in one process). Scores are then
        # normalised / whitened / clipped over the whole batch.
        rollout, raw, fwd = gather_rollout(rt, rollout, raw, fwd, self.tokenizer.pad_token_id)
        norm = getattr(self.reward_fn, "normalization", None) if cfg.normalize_reward else None
        scores = process_scores(raw, rollout.finished, norm, cfg.whiten_rewards, cfg.reward_clip, cfg.missing_eos_penalty)
        mask = rollout.response_mask

        # 4. Per-token KL to the reference.
        kl_tokens = kl_per_token(fwd.old_logprobs, fwd.ref_logprobs, cfg.kl_estimator) * mask  # (B, T)
        scored = Scored(rollout, raw, scores, fwd.old_logprobs, fwd.ref_logprobs, fwd.entropy, fwd.values, kl_tokens,
                        self.kl_ctl.value)

        # 5. The algorithm's KL-shaped reward and advantages.
        exp, algo_metrics = algo.advantages(scored)
        t_fwd = time.perf_counter()

        # 6. Epochs x minibatches with the algorithm's loss; a generator holding its own weights (vLLM) reloads them.
        train = self.optimise(exp)
        sync_weights(self.model.lm, cfg.sampling.backend)
        t_train = time.perf_counter()

        # 7. KL controller and metrics.
        kl_seq = ((fwd.old_logprobs - fwd.ref_logprobs) * mask).sum(-1)  # (B,) per-response k1 KL estimate
        kl_mean = float(kl_seq.mean())  # global: the batch was gathered
        if math.isfinite(kl_mean):
            self.kl_ctl.update(kl_mean, len(rollout.completions))
        self.step_count += 1
        n_tokens = float(mask.sum())
        gen_s = t_gen - t_start  # processes sample in parallel: global tokens over one process's sampling time
        return {
            "step": self.step_count,
            "episodes": self.step_count * cfg.batch_size,
            "reward/raw_mean": float(raw.mean()),
            "reward/raw_std": float(raw.std()) if raw.numel() > 1 else 0.0,
            "reward/normalized_mean": float(scores.mean()),
            "kl/mean": kl_mean,
            f"kl/{cfg.kl_estimator}_mean": float(kl_tokens.sum(-1).mean()),
            "kl/beta": scored.beta,
            "entropy": float(masked_mean(fwd.entropy, mask)),
            **algo_metrics,
            "response/length_mean": n_tokens / len(rollout.completions),
            "response/eos_fraction": float(rollout.finished.float().mean()),
            **train,
            "tokens_per_s": n_tokens / gen_s if gen_s > 0 else 0.0,
            "episodes_per_s": len(rollout.completions) / (t_train - t_start),
            "time/generate": gen_s,
            "time/score": t_score - t_gen,
            "time/forward": t_fwd - t_score,
            "time/train": t_train - t_fwd,
            "time/step": t_train - t_start,
        }

    # ------------------------------------------------------------------ optimisation
    def minibatch_forward(self, mb: Experience) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """New log-probs, values (with a value head) and entropy (when the loss needs it): (b, T) each."""
        temperature = self.cfg.sampling.temperature
        out = self.train_model(mb.sequences, mb.attention_mask, mb.prompt_len, with_values=self.algo.uses_values,
                               with_entropy=self.algo.uses_entropy, temperature=temperature)
        return out.logprobs, out.values, out.entropy

    def optimise(self, exp: Experience) -> dict[str, float]:
        """Epochs x minibatches; each process takes its share of every minibatch, each row weighted 1 / minibatch."""
        cfg, rt = self.cfg, self.runtime
        sums: dict[str, float] = {}
        updates = skipped = 0
        grad_norms: list[float] = []
        for _ in range(cfg.update_epochs):
            perm = torch.randperm(len(exp), generator=self.shuffle_gen)
            for mb_idx in perm.split(cfg.mini_batch_size):
                self.optimizer.zero_grad(set_to_none=True)
                finite, stats = True, []
                for micro_idx in mb_idx[rt.shard(len(mb_idx))].split(cfg.micro_batch_size):
                    mb = exp.select(micro_idx)
                    loss, s = self.algo.loss(mb, *self.minibatch_forward(mb))
                    if not rt.all(bool(torch.isfinite(loss))):
                        finite = False  # non-finite guard (in any process): drop this whole minibatch update
                        break
                    rt.backward(loss * len(micro_idx) / len(mb_idx))
                    stats.append(s)
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
                    for key, v in s.items():
                        sums[key] = sums.get(key, 0.0) + v / len(stats)
        out = {key: rt.mean(v / updates) for key, v in sums.items()} if updates else {}
        out |= {
            "grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else float("nan"),
            "optimizer_steps": updates,
            "nonfinite/skipped_updates": skipped,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        return out

    # ------------------------------------------------------------------ exact resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step_count,
            "data_pos": self.data_pos,
            "trainable": trainable_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "kl_ctl": self.kl_ctl.state_dict(),
            "rng": rng_state({"sample": self.sample_gen, "shuffle": self.shuffle_gen}),
            "world_size": self.runtime.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (saved := int(state.get("world_size", 1))) != self.runtime.world_size:
            raise ConfigError(
                f"the checkpoint was written by {saved} process(es) and this run has {self.runtime.world_size}: "
                f"resume with {saved}, or use another out_dir / resume=false to start over")
        load_trainable(self.model, state["trainable"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        restore_rng(state["rng"], {"sample": self.sample_gen, "shuffle": self.shuffle_gen})
        self.step_count, self.data_pos = int(state["step"]), int(state["data_pos"])

    def finish(self) -> dict[str, Any]:
        """Closing measurements beyond the per-step metrics (none for online algorithms)."""
        return {}
