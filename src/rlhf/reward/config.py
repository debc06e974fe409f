"""Configs for reward-model training (`rlhf train-reward`) and scoring (`rlhf score`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlhf.models.registry import DEFAULT_REWARD_TRUNK

Pooling = Literal["auto", "native", "last", "mean"]


@dataclass(frozen=True)
class RewardTrainConfig:
    pairs: str = "runs/feedback/pairs.jsonl"
    """Preference pairs (`prompt`, `chosen`, `rejected`, optional `weight`): .jsonl, .json, .csv, .parquet or a
    datasets folder."""
    eval_pairs: str | None = None
    """Optional separate eval pairs file; when null, `eval_fraction` of the prompts are held out instead."""
    eval_fraction: float = 0.1
    """Share of prompts held out for validation: early stopping and the choice of the saved checkpoint (pairs of one
    prompt never straddle the split)."""
    test_fraction: float = 0.1
    """Share of prompts held out as a test split, used for nothing but the reported accuracy (with a CI that
    resamples prompts); all pairs of a prompt stay on one side. 0 = no test split."""
    model: str = DEFAULT_REWARD_TRUNK
    """Trunk: alias, local folder or hub id; loaded with AutoModelForSequenceClassification(num_labels=1)."""
    out_dir: str = "runs/reward"
    """Output folder: the reward model (HF format) plus reward_model.json, reward_stats.json, metrics.jsonl, tb/."""
    pooling: Pooling = "auto"
    """Where the score is read: native = the model's own head (CLS pooler for BERT), last = last real token,
    mean = masked mean of the last hidden states; auto = last for decoder-only models, mean for encoders."""
    max_length: int = 256
    """Tokens per sequence; the prompt is cut first (its oldest tokens), the response only if it alone is too long."""
    append_eos: bool | None = None
    """Append EOS to each response before scoring; null = yes for decoder-only models that have an EOS token."""
    batch_size: int = 16
    """Pairs per optimizer step (one forward pass over their distinct responses: at most 2 x batch_size rows)."""
    prompts_per_step: int = 0
    """0 = steps of `batch_size` pairs shuffled across prompts. N > 0 = each step takes every pair of N prompts
    instead (batch_size is then unused): the K(K-1)/2 pairs of a ranking of K responses are learned together and
    cost K forward rows, not K(K-1). InstructGPT (Ouyang et al. 2022, sec. 3.5) found shuffled pairs overfit; on a
    demo run's pairs it matched their accuracy in half the time (docs/reward.md)."""
    eval_batch_size: int = 64
    """Pairs per forward pass at evaluation."""
    epochs: float = 2.0
    """Passes over the training pairs (fractions allowed)."""
    lr: float = 1e-4
    """Peak learning rate of the trunk (and of LoRA adapters); 1e-4 suits MiniLM (see docs/reward.md), use less for
    larger full fine-tunes."""
    head_lr: float | None = 1e-3
    """Peak learning rate of the freshly initialised score head; null = `lr`."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases and norms)."""
    warmup_ratio: float = 0.1
    """Share of steps with linear warm-up; the rest decays linearly to zero."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0 = off)."""
    margin: float = 0.0
    """Constant margin in -log sigma(r_c - r_r - margin); a pair's `metadata.margin` overrides it."""
    center_coef: float = 0.0
    """Weight of the reward-centering term mean((r_c + r_r)^2) (Eisenstein et al. 2023); keeps rewards near 0."""
    dropout: bool = False
    """Keep the trunk's dropout on while training (off by default: it adds noise to the pairwise difference)."""
    lora: bool = False
    """Train LoRA adapters (plus the head) instead of all weights; merged into the saved model."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA branch."""
    lora_target_modules: tuple[str, ...] | None = None
    """Modules to adapt; null = peft's default for the architecture (e.g. query/value)."""
    eval_every: int = 0
    """Evaluate every N steps; 0 = once per epoch (and at the end)."""
    patience: int | None = 2
    """Early stopping: stop after this many evaluations without a better eval loss; null = never stop early."""
    save_every: int = 100
    """Write a resumable checkpoint every N steps (and at every evaluation); 0 = only at evaluations."""
    resume: bool = True
    """Continue from out_dir/checkpoint when it exists and was written with the same config."""
    stats_pairs: int = 512
    """Training pairs whose chosen and rejected rewards form the reference set for normalisation statistics."""
    seed: int = 0
    """Seed for the split, the batch order, the head initialisation and dropout."""
    threads: int | None = None
    """torch CPU threads (null = torch's default)."""
    tensorboard: bool = True
    """Also log metrics to out_dir/tb for TensorBoard."""
    log_every: int = 1
    """Write a metrics.jsonl/TensorBoard record every N steps."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_fraction < 1.0 or not 0.0 <= self.test_fraction < 1.0:
            raise ValueError("eval_fraction and test_fraction must be in [0, 1)")
        if self.eval_fraction + self.test_fraction >= 1.0:
            raise ValueError("eval_fraction + test_fraction must leave prompts to train on (< 1)")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("batch sizes must be >= 1")
        if self.prompts_per_step < 0:
            raise ValueError("prompts_per_step must be >= 0")
        if self.max_length < 8:
            raise ValueError("max_length must be >= 8")
        if self.epochs <= 0:
            raise ValueError("epochs must be > 0")
        if self.patience is not None and self.patience < 1:
            raise ValueError("patience must be >= 1 or null")


@dataclass(frozen=True)
class ScoreConfig:
    reward: str
    """Reward spec: rm:PATH (or a reward-model folder), classifier:MODEL[:LABEL], scorer:NAME, python:module:fn."""
    input: str
    """Records with `prompt` and `completion` fields (.jsonl/.json/.csv/.parquet)."""
    output: str
    """JSONL written atomically: every input record plus a `reward` field."""
    batch_size: int = 32
    """Records per reward call."""
    normalize: bool = False
    """Write (reward - mean) / std using the reward's saved statistics (reward models only)."""
    threads: int | None = None
    """torch CPU threads (null = torch's default)."""
