"""The policy-optimiser config family: shared fields here, each algorithm's own fields in its module.

PolicyConfig (every optimiser: model, LoRA, optimiser, checkpoints, seed)
  |- OnlineConfig (sample -> score -> update: prompts, reward, batch, KL to the reference, stop rules)
  |    |- PPOConfig (rlhf.policy.ppo)   |- RLOOConfig (rlhf.policy.rloo)   |- GRPOConfig (rlhf.policy.grpo)
  |- DPOConfig (rlhf.policy.dpo: preference pairs, no reward model, no rollouts)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from rlhf.generation import SamplingConfig
from rlhf.models.lora import LoraSettings
from rlhf.models.registry import DEFAULT_POLICY
from rlhf.policy.losses import KLEstimator

Optimizer = Literal["ppo", "dpo", "rloo", "grpo"]


@dataclass(frozen=True)
class PolicyConfig:
    model: str = DEFAULT_POLICY
    """Policy to align: an alias, a local folder or a hub id. With LoRA it is also the reference (adapter off)."""
    out_dir: str = "runs/policy"
    """Output folder: adapter/ (or policy/), metrics.jsonl, tb/, the resolved config, checkpoint.pt, result.json."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA adapter settings; with lora.enabled=false all weights train and the reference is a frozen copy."""
    init_adapter: str | None = None
    """Start the LoRA adapter from this saved peft adapter (e.g. an `rlhf sft` run's adapter/) instead of zero;
    PPO, RLOO and GRPO only. The reference stays `model` with the adapter off, so the KL counts that adapter's
    drift too, and the penalty pulls towards the base rather than the starting adapter. Its rank, alpha, dropout
    and target modules must equal `lora`'s."""
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=32, temperature=1.0))
    """Sampling for rollouts (and DPO's closing KL measurement); log-probs are computed at this temperature."""
    max_prompt_tokens: int = 128
    """Prompts longer than this keep their last tokens."""
    system_prompt: str | None = None
    """Optional system message for the chat template."""
    lr: float = 5e-4
    """AdamW learning rate (constant)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this before each optimizer step."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step (gradient accumulation)."""
    time_limit_min: float | None = None
    """Stop after the first step that ends past this many minutes; null = off. A run stopped by the clock is
    reported as incomplete (it depends on the machine's speed) and resumes from its checkpoint."""
    checkpoint_every: int = 10
    """Save a resumable checkpoint every N steps (and at the end); 0 = only at the end."""
    resume: bool = True
    """Resume from out_dir/checkpoint.pt when it exists."""
    tensorboard: bool = True
    """Also log metrics as TensorBoard events under out_dir/tb."""
    seed: int = 0
    """Seed for sampling, data order and minibatch shuffling."""
    threads: int | None = None
    """torch CPU threads (null = torch's default)."""

    def __post_init__(self) -> None:
        if self.init_adapter is not None and not self.lora.enabled:
            raise ValueError("init_adapter needs lora.enabled=true: it is a LoRA adapter to start from")
        if self.grad_accum_steps < 1:
            raise ValueError("grad_accum_steps must be >= 1")
        s = self.sampling
        # Log-probs, ratios and the KL come from the full softmax at `temperature`; top-k/top-p samples from
        # another distribution, which would make every update silently off-policy.
        if s.temperature <= 0 or s.top_p < 1.0 or s.top_k > 0:
            raise ValueError(
                f"sampling.temperature must be > 0 with top_p = 1 and top_k = 0 (got temperature={s.temperature}, "
                f"top_p={s.top_p}, top_k={s.top_k}): the policy's log-probs and the KL are computed from the full "
                "softmax, so truncated or greedy sampling would make the updates off-policy"
            )


@dataclass(frozen=True)
class OnlineConfig(PolicyConfig):
    prompts: str = "redteam"
    """Prompt file (.jsonl/.csv/.parquet/datasets folder) or a built-in set: helpful, redteam."""
    split: str | None = "train"
    """Keep only prompts whose `split` field equals this (prompts without the field are split by hash); null = all."""
    limit: int | None = None
    """Use only the first N prompts (after the split filter)."""
    episode_seeds: bool = False
    """Seed each episode's sampling from (seed, step, episode index) instead of one stream for the batch, so the
    episodes do not depend on how the batch is split over processes. Always on under several processes; set it
    in one process to reproduce an N-process run."""
    reward: str = "scorer:toxicity"
    """Reward spec when no RewardFunction is passed: rm:FOLDER, classifier:MODEL, scorer:NAME or python:module:fn."""
    batch_size: int = 16
    """Episodes (completions) per step; with k samples per prompt that is batch_size / k prompts."""
    mini_batch_size: int = 4
    """Episodes per optimizer step; batch_size / mini_batch_size optimizer steps per update epoch."""
    forward_batch_size: int | None = None
    """Rows per no-grad forward when computing old/reference log-probs (null = the micro-batch size)."""
    update_epochs: int = 2
    """Passes (K; GRPO's mu) over each rollout batch. With 1 epoch and one minibatch the update is on-policy."""
    clip_range: float = 0.2
    """Ratio clip epsilon: updates stop pushing once pi / pi_old leaves [1 - eps, 1 + eps]."""
    kl_coef: float = 0.1
    """Initial beta, the weight of the KL-to-reference penalty."""
    adaptive_kl: bool = True
    """Adapt beta towards target_kl (Ziegler et al. 2019); false keeps beta fixed."""
    target_kl: float = 6.0
    """Target KL to the reference, summed over a response (nats), for the adaptive controller."""
    kl_horizon: int = 32
    """Adaptive controller horizon in episodes: beta moves by at most a factor exp(0.2 x batch_size / horizon) per step."""
    kl_coef_min: float = 0.01
    """The adaptive beta never goes below this (a vanishing penalty lets KL run away before the controller reacts)."""
    kl_coef_max: float = 10.0
    """The adaptive beta never goes above this."""
    kl_estimator: KLEstimator = "k1"
    """Per-token KL estimator in the penalty: k1 (log-ratio), k2 (squared), k3 (Schulman)."""
    normalize_reward: bool = True
    """Standardise the score with the reward function's saved (mean, std) when it has them."""
    whiten_rewards: bool = False
    """Standardise scores over each batch (after normalisation)."""
    reward_clip: float | None = None
    """Clip scores to +-this (after normalisation/whitening); null = no clip."""
    missing_eos_penalty: float | None = None
    """Subtract this from the score of completions that never emit EOS; null = no penalty."""
    max_steps: int = 30
    """Stop after this many steps."""
    reward_threshold: float | None = None
    """Stop once a step's mean raw reward reaches this; null = off."""
    kl_budget: float | None = None
    """Stop once a step's mean KL to the reference exceeds this (nats per response); null = off."""
    old_logprobs: Literal["sampler", "forward"] = "sampler"
    """Where the old policy's log-probs (and entropy) come from: `sampler`, those the KV-cache sampler computes
    while drawing, which saves one policy forward per step (they differ from a forward's by float rounding: the
    adapter is merged while sampling; PPO's values then come from the sampler's trunk states too); or `forward`, a
    no-grad forward after sampling. The vllm backend always uses `forward`."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 1 or self.mini_batch_size < 1 or self.update_epochs < 1:
            raise ValueError("batch_size, mini_batch_size and update_epochs must be >= 1")
        if self.batch_size % self.mini_batch_size:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of mini_batch_size ({self.mini_batch_size})")
        if self.mini_batch_size % self.grad_accum_steps:
            raise ValueError("mini_batch_size must be a multiple of grad_accum_steps")
        if self.kl_estimator not in ("k1", "k2", "k3"):
            raise ValueError(f"kl_estimator must be k1, k2 or k3, not {self.kl_estimator!r}")
        if self.max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        if self.old_logprobs not in ("sampler", "forward"):
            raise ValueError(f"old_logprobs must be sampler or forward, not {self.old_logprobs!r}")
        if self.adaptive_kl and self.target_kl <= 0:
            raise ValueError("target_kl must be > 0 with adaptive_kl")
        if not 0 < self.kl_coef_min <= self.kl_coef <= self.kl_coef_max:
            raise ValueError(f"need 0 < kl_coef_min <= kl_coef <= kl_coef_max, got {self.kl_coef_min}, {self.kl_coef}, {self.kl_coef_max}")

    @property
    def micro_batch_size(self) -> int:
        return self.mini_batch_size // self.grad_accum_steps


def kl_target(cfg: PolicyConfig) -> float | None:
    """The KL to the reference a run aims at (nats per response), for evaluation's hacking check; None if none."""
    return cfg.target_kl if isinstance(cfg, OnlineConfig) and cfg.adaptive_kl else None


def with_shared(cfg: PolicyConfig, **values: Any) -> PolicyConfig:
    """`cfg` with a pipeline's shared settings (model, prompts, reward, pairs, out_dir, seed, ...) filled in,
    keeping only those its optimiser has: DPO takes `pairs` and ignores `reward`; PPO/RLOO/GRPO the reverse."""
    names = {f.name for f in dataclasses.fields(cfg)}
    return dataclasses.replace(cfg, **{k: v for k, v in values.items() if k in names})
