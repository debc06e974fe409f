"""Tiny PPO setups shared by the tests in this folder."""

from __future__ import annotations

from pathlib import Path

import torch

from rlhf.config import load_config
from rlhf.policy.ppo import PPOConfig
from rlhf.types import Prompt
from tiny import tiny_llama

TEXTS = [
    "hot house", "the quick brown fox jumps over the lazy dog", "thank you", "good",
    "please summarize the following conversation in one sentence", "bad awful terrible",
    "my house is too hot", "love",
]
PROMPTS = [Prompt(f"p{i}", t) for i, t in enumerate(TEXTS)]


def tiny_policy(tok, seed: int = 0):
    """The tiny random Llama with its EOS embedding aligned to its mean hidden state, so some rows stop early."""
    model = tiny_llama(len(tok), seed)
    from rlhf.generation import encode_prompts

    ids, mask = encode_prompts(tok, TEXTS, 64)
    with torch.no_grad():
        h = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[mask.bool()].mean(0)
        model.get_input_embeddings().weight[tok.eos_token_id] = h * 3.0 / h.norm() ** 2
    return model


def tiny_cfg(out: Path, *overrides: str) -> PPOConfig:
    base = [
        f"out_dir={out}", "batch_size=8", "mini_batch_size=4", "sampling.max_new_tokens=12", "max_prompt_tokens=64",
        "update_epochs=2", "max_steps=3", "tensorboard=false", "checkpoint_every=0", "lr=1e-2", "lora.r=4",
    ]
    return load_config(PPOConfig, None, [*base, *overrides])


def count_e(prompts, completions):
    """Synthetic reward: how often the policy emits the letter 'e'."""
    return [c.count("e") / 4 for c in completions]
