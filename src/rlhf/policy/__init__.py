"""Policy optimisation: PPO, RLOO, GRPO (online, against any RewardFunction, KL-penalised to the reference)
and DPO (offline, on preference pairs), sharing one rollout / log-prob / KL-control / checkpoint core.

Entry points: `train_policy(cfg, ...) -> PolicyResult` with a PPOConfig, RLOOConfig, GRPOConfig or
DPOConfig (`train_ppo` for PPO), and `load_policy(out_dir)`. Layout: docs/policy.md.
"""

from typing import Any

__all__ = [
    "CONFIGS", "DPOConfig", "GRPOConfig", "PPOConfig", "PolicyResult", "RLOOConfig", "load_policy", "train_policy",
    "train_ppo",
]

_WHERE = {
    "PPOConfig": "rlhf.policy.ppo", "RLOOConfig": "rlhf.policy.rloo", "GRPOConfig": "rlhf.policy.grpo",
    "DPOConfig": "rlhf.policy.dpo", "CONFIGS": "rlhf.policy.train", "PolicyResult": "rlhf.policy.train",
    "load_policy": "rlhf.policy.train", "train_policy": "rlhf.policy.train", "train_ppo": "rlhf.policy.train",
}


def __getattr__(name: str) -> Any:
    # Lazy: rlhf.models.reference imports rlhf.policy.losses, and the trainers import the reference back.
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'rlhf.policy' has no attribute {name!r}")
