"""Configs of personalisation: the chat server's policy, the per-user reward and `rlhf personalize`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from rlhf.feedback.config import DEFAULT_DB
from rlhf.generation import SamplingConfig
from rlhf.models.lora import LoraSettings
from rlhf.models.registry import DEFAULT_POLICY
from rlhf.policy import GRPOConfig, PPOConfig, RLOOConfig
from rlhf.policy.config import OnlineConfig

DEFAULT_PERSONAL_DIR = "runs/personal"


@dataclass(frozen=True)
class ChatConfig:
    model: str = DEFAULT_POLICY
    """Base policy held in memory once (alias, folder or hub id)."""
    shared_adapter: Optional[str] = None
    """The shared aligned policy: an `rlhf ppo` output folder or a peft adapter folder, merged into the base at load;
    null = no shared policy (users without an adapter get the base)."""
    personal_dir: str = DEFAULT_PERSONAL_DIR
    """Folder `rlhf personalize` writes users' rewards and adapters to (the server only reads adapters from it)."""
    max_new_tokens: int = 96
    """Upper bound on the tokens of one reply; a request may ask for fewer, never more."""
    temperature: float = 0.7
    """Sampling temperature of replies (two candidates are two samples)."""
    top_p: float = 1.0
    """Nucleus sampling for replies (1 = the full softmax, as PPO samples)."""
    system_prompt: Optional[str] = None
    """Optional system message put before every conversation."""
    max_prompt_tokens: int = 512
    """A conversation longer than this keeps its most recent tokens."""
    max_loaded_adapters: int = 8
    """LRU limit: users' adapters kept in memory at once (each costs its adapter's size, not the model's)."""
    max_batch: int = 8
    """Requests decoded together in one batch (users' adapters mixed in one forward pass)."""
    max_queue: int = 64
    """Requests waiting for the model beyond this are refused with 503 (retry later)."""
    threads: Optional[int] = None
    """torch CPU threads for generation (null = torch's default)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.max_loaded_adapters < 1 or self.max_batch < 1 or self.max_queue < 1:
            raise ValueError("max_new_tokens, max_loaded_adapters, max_batch and max_queue must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")


@dataclass(frozen=True)
class PersonalRewardConfig:
    trunk: str = DEFAULT_POLICY
    """Shared trunk (alias, folder or hub id). The default reads the policy's own base model, which sees length and
    layout (line breaks, lists) that an uncased sentence encoder such as MiniLM normalises away."""
    pooling: Literal["reply", "mean", "last"] = "reply"
    """Trunk states pooled into one vector: the mean over the reply's tokens (the trunk still reads the conversation
    before it), over all tokens, or the last token."""
    depth: float = 0.5
    """The hidden layer pooled, as a fraction of the trunk's depth (1 = the last layer; the middle one keeps more
    of the surface form: length, layout)."""
    rank: int = 4
    """K: basis rewards on the trunk (LoRe, arXiv 2504.14439); a user's reward is a weighted sum of them."""
    train_trunk: bool = False
    """Fine-tune the trunk too (mini-batches, `epochs`, `lr`); false = frozen trunk as in LoRe: pooled states are
    computed once and the basis and weights train full-batch (`head_steps`)."""
    max_length: int = 256
    """Tokens per (conversation, reply); the conversation is cut first, oldest tokens first."""
    head_steps: int = 400
    """Full-batch optimizer steps of the basis and weights on a frozen trunk."""
    epochs: float = 4.0
    """Passes over everyone's pairs when the trunk is trained."""
    batch_size: int = 16
    """Pairs per optimizer step when the trunk is trained."""
    lr: float = 5e-5
    """Learning rate of the trunk (train_trunk only)."""
    head_lr: float = 1e-2
    """Learning rate of the basis and the weight vectors."""
    basis_l2: float = 1.0
    """L2 penalty on the basis (summed over pairs): keeps it from memorising individual pairs."""
    user_prior: float = 1.0
    """Strength of the Gaussian prior that pulls a user's weights toward the shared weights (summed over pairs)."""
    refresh: float = 0.25
    """Retrain the shared part when the pooled feedback grew (or lost a user's share) by this fraction since it was
    trained; otherwise only the per-user weights of users with new feedback are fitted, on the frozen shared part."""
    eval_fraction: float = 0.0
    """Hold out this share of each user's choices (by a seeded hash of the judgement) from reward and adapter
    training and report each user's accuracy on them; 0 = train on everything."""
    seed: int = 0
    """Seed for the basis initialisation, batch order and the held-out split."""

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError("rank must be >= 1")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError("eval_fraction must be in [0, 1)")
        if not 0.0 <= self.depth <= 1.0:
            raise ValueError("depth must be in [0, 1]")
        if self.user_prior < 0 or self.refresh < 0 or self.epochs <= 0 or self.head_steps < 1:
            raise ValueError("user_prior and refresh must be >= 0, epochs > 0, head_steps >= 1")


# Per-user updates: few steps from feedback-sized rewards, KL to the shared policy (which is the reference). beta
# starts at 0.3, never goes below it, and moves up to 1.22x a step (horizon 16 at 16 episodes): from 0.1 at up to
# 1.1x a step, KL reached 5-15 nats against a target of 4 within 8 steps; from 0.3 without the floor, the controller
# lowered beta to 0.14 while early KL was low and the concise user's KL ran to 10 (bench/personal_policy.py,
# docs/personalize.md).
_USER = dict(sampling=SamplingConfig(max_new_tokens=96, temperature=0.7), mini_batch_size=4, target_kl=4.0,
             kl_coef=0.3, kl_coef_min=0.3, kl_horizon=16, checkpoint_every=4, tensorboard=False, lora=LoraSettings(r=16, alpha=32.0), split=None)


def _user_ppo() -> PPOConfig:
    return PPOConfig(batch_size=8, max_steps=12, **_USER)


# One on-policy optimizer step per batch (4 micro-batches accumulated): the whole-reply ratio of 256-token replies
# leaves the clip range after one step, and 4 minibatch steps on one batch sent the concise user's replies from 80
# to 244 tokens in a step (docs/personalize.md).
_GROUP = dict(batch_size=16, k=4, update_epochs=1, max_steps=8, grad_accum_steps=4, **_USER | {"mini_batch_size": 16})


def _user_rloo() -> RLOOConfig:
    return RLOOConfig(**_GROUP)


def _user_grpo() -> GRPOConfig:
    return GRPOConfig(**_GROUP)


@dataclass(frozen=True)
class PersonalizeConfig:
    db: str = DEFAULT_DB
    """Feedback store the chat feedback is read from (SQLite path or database URL)."""
    out_dir: str = DEFAULT_PERSONAL_DIR
    """Personal folder: reward/ (shared part + users/), adapters/u<ID>/v<N>/ (peft adapter + PPO state)."""
    model: str = DEFAULT_POLICY
    """Base policy (the same the chat server holds)."""
    shared_adapter: Optional[str] = None
    """Shared aligned adapter users start from and stay KL-bounded to (an `rlhf ppo` folder or adapter folder)."""
    system_prompt: Optional[str] = None
    """The chat server's system prompt (ChatConfig.system_prompt): PPO samples under it, as users are answered."""
    users: tuple[str, ...] = ()
    """Only these users (names); empty = everyone with feedback."""
    min_pairs: int = 8
    """Preference pairs a user needs before an adapter is trained (fewer: a reward part only)."""
    force: bool = False
    """Retrain every user's adapter and the shared reward part, new feedback or not."""
    keep_versions: int = 2
    """Adapter versions kept per user on disk (the published one included)."""
    reward: PersonalRewardConfig = field(default_factory=PersonalRewardConfig)
    """The per-user reward model."""
    optimizer: Literal["rloo", "ppo", "grpo"] = "rloo"
    """The RL update of a user's adapter. RLOO's group baseline needs no value head; PPO's is learned from zero on
    every update, from a few steps (bench/personal_policy.py measures one; `--optimizers rloo,ppo` compares them)."""
    rloo: RLOOConfig = field(default_factory=_user_rloo)
    """Settings with optimizer=rloo (model, prompts, reward and out_dir are set per user; KL is to the shared
    policy). 16 episodes a step: 4 prompts x k = 4."""
    ppo: PPOConfig = field(default_factory=_user_ppo)
    """Settings with optimizer=ppo (as rloo's)."""
    grpo: GRPOConfig = field(default_factory=_user_grpo)
    """Settings with optimizer=grpo (as rloo's)."""
    threads: Optional[int] = None
    """torch CPU threads (null = torch's default)."""

    def __post_init__(self) -> None:
        if self.min_pairs < 1 or self.keep_versions < 1:
            raise ValueError("min_pairs and keep_versions must be >= 1")
        if self.optimizer not in ("rloo", "ppo", "grpo"):
            raise ValueError(f"optimizer must be rloo, ppo or grpo, not {self.optimizer!r}")

    @property
    def policy(self) -> OnlineConfig:
        """The selected optimiser's settings."""
        return getattr(self, self.optimizer)
