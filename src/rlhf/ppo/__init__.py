"""PPO: fine-tune a policy against any RewardFunction with a KL penalty to a frozen reference.

Entry points: `train_ppo(cfg, reward_fn) -> PPOResult` and `load_ppo_policy(out_dir)`.
"""

from typing import Any

__all__ = ["PPOConfig", "PPOResult", "load_ppo_policy", "train_ppo"]


def __getattr__(name: str) -> Any:
    # Lazy: rlhf.models.reference imports rlhf.ppo.losses, and the trainer imports it back.
    if name == "PPOConfig":
        from rlhf.ppo.config import PPOConfig

        return PPOConfig
    if name in ("PPOResult", "load_ppo_policy", "train_ppo"):
        from rlhf.ppo import train

        return getattr(train, name)
    raise AttributeError(f"module 'rlhf.ppo' has no attribute {name!r}")
