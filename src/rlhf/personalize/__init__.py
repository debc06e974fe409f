"""Personalisation: each user's own reward and LoRA adapter, learned from their chat feedback, served from one base.

Library API (see docs/personalize.md):
    run_personalize(PersonalizeConfig(db=..., out_dir="runs/personal"))     # `rlhf personalize`
    load_reward_function("rm-user:runs/personal:alice")                     # a user's reward, for PPO / evaluate
    ChatService(ChatConfig(personal_dir="runs/personal"))                   # the policy behind /chat
    delete_user_data(db, PersonalDir.at("runs/personal"), "alice")          # feedback, reward part, adapters

Names load on first use, so the labeling app does not import torch until someone chats.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ChatConfig": "config", "PersonalizeConfig": "config", "PersonalRewardConfig": "config",
    "ChatService": "serving", "ReplyRequest": "serving", "AdapterRef": "serving",
    "PersonalDir": "layout", "PersonalReward": "reward", "PersonalRewardModel": "reward",
    "run_personalize": "train", "PersonalizeResult": "train",
    "delete_user_data": "users", "export_user_data": "users", "user_status": "users",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"rlhf.personalize.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'rlhf.personalize' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
