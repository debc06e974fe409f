"""PPOConfig: every knob of `rlhf ppo`, with defaults tuned for SmolLM2-135M + LoRA on a 2-core CPU."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.generation import SamplingConfig
from rlhf.models.lora import LoraSettings
from rlhf.models.registry import DEFAULT_POLICY
from rlhf.ppo.losses import KLEstimator


@dataclass(frozen=True)
class PPOConfig:
    model: str = DEFAULT_POLICY
    """Policy to align: an alias, a local folder or a hub id. It is also the frozen reference."""
    prompts: str = "redteam"
    """Prompt file (.jsonl/.csv/.parquet/datasets folder) or a built-in set: helpful, redteam."""
    split: str | None = "train"
    """Keep only prompts whose `split` field equals this (prompts without the field are kept); null = all."""
    limit: int | None = None
    """Use only the first N prompts (after the split filter)."""
    reward: str = "scorer:toxicity"
    """Reward spec when no RewardFunction is passed: rm:FOLDER, classifier:MODEL, scorer:NAME or python:module:fn."""
    out_dir: str = "runs/ppo"
    """Output folder: adapter/ (or policy/), value_head.safetensors, metrics.jsonl, tb/, ppo.yaml, checkpoint.pt."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA adapter settings; with lora.enabled=false all weights train and the reference is a frozen copy."""
    separate_critic: bool = False
    """Give the value function its own trunk (a copy, trained in full) instead of sharing the policy's."""
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=32, temperature=1.0))
    """Rollout sampling; log-probs are recomputed at this temperature."""
    max_prompt_tokens: int = 128
    """Prompts longer than this keep their last tokens."""
    system_prompt: str | None = None
    """Optional system message for the chat template."""
    batch_size: int = 16
    """Episodes (prompts, one completion each) per PPO step."""
    mini_batch_size: int = 4
    """Episodes per optimizer step; batch_size / mini_batch_size optimizer steps per PPO epoch."""
    grad_accum_steps: int = 1
    """Micro-batches per mini-batch (gradient accumulation); each holds mini_batch_size / grad_accum_steps rows."""
    forward_batch_size: int | None = None
    """Rows per no-grad forward when computing old/reference log-probs and values (null = mini-batch micro size)."""
    ppo_epochs: int = 2
    """Passes (K) over each rollout batch."""
    lr: float = 5e-4
    """AdamW learning rate."""
    value_lr_mult: float = 10.0
    """The value head learns at lr x this: it starts at zero and must reach the reward scale fast."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this before each optimizer step."""
    clip_range: float = 0.2
    """PPO ratio clip epsilon."""
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
    kl_coef: float = 0.1
    """Initial beta, the per-token KL penalty weight in the reward."""
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
    """Per-token KL estimator used in the reward penalty: k1 (log-ratio), k2 (squared), k3 (Schulman)."""
    normalize_reward: bool = True
    """Standardise the score with the reward function's saved (mean, std) when it has them."""
    whiten_rewards: bool = False
    """Standardise scores over each batch (after normalisation)."""
    reward_clip: float | None = None
    """Clip scores to +-this (after normalisation/whitening); null = no clip."""
    missing_eos_penalty: float | None = None
    """Subtract this from the score of completions that never emit EOS; null = no penalty."""
    max_steps: int = 30
    """Stop after this many PPO steps."""
    reward_threshold: float | None = None
    """Stop once a step's mean raw reward reaches this; null = off."""
    kl_budget: float | None = None
    """Stop once a step's mean KL to the reference exceeds this (nats per response); null = off."""
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
    """Seed for sampling, prompt order and minibatch shuffling."""
    threads: int | None = None
    """torch CPU threads (null = torch's default)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.mini_batch_size < 1 or self.ppo_epochs < 1:
            raise ValueError("batch_size, mini_batch_size and ppo_epochs must be >= 1")
        if self.batch_size % self.mini_batch_size:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of mini_batch_size ({self.mini_batch_size})")
        if self.grad_accum_steps < 1 or self.mini_batch_size % self.grad_accum_steps:
            raise ValueError("mini_batch_size must be a multiple of grad_accum_steps (>= 1)")
        if self.kl_estimator not in ("k1", "k2", "k3"):
            raise ValueError(f"kl_estimator must be k1, k2 or k3, not {self.kl_estimator!r}")
        if self.max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        if self.adaptive_kl and self.target_kl <= 0:
            raise ValueError("target_kl must be > 0 with adaptive_kl")
        if not 0 < self.kl_coef_min <= self.kl_coef <= self.kl_coef_max:
            raise ValueError(f"need 0 < kl_coef_min <= kl_coef <= kl_coef_max, got {self.kl_coef_min}, {self.kl_coef}, {self.kl_coef_max}")
        s = self.sampling
        # Log-probs, ratios and the KL come from the full softmax at `temperature`; top-k/top-p samples from
        # another distribution, which would make every update silently off-policy.
        if s.temperature <= 0 or s.top_p < 1.0 or s.top_k > 0:
            raise ValueError(
                f"sampling.temperature must be > 0 with top_p = 1 and top_k = 0 for PPO rollouts (got temperature="
                f"{s.temperature}, top_p={s.top_p}, top_k={s.top_k}): the policy's log-probs are computed from the "
                "full softmax, so truncated or greedy sampling would make the updates off-policy"
            )

    @property
    def micro_batch_size(self) -> int:
        return self.mini_batch_size // self.grad_accum_steps
