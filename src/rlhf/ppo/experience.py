"""Typed batches that flow through a PPO step: Rollout (sampled + scored) -> Experience (trainable)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Rollout:
    """Sampled completions for B prompts; prompts left-padded to P, responses right-padded to T."""

    prompts: list[str]  # B raw prompt texts (what the reward sees)
    completions: list[str]  # B decoded responses
    sequences: torch.Tensor  # (B, P+T) long
    attention_mask: torch.Tensor  # (B, P+T) long: 0 on left prompt padding and right response padding
    response_mask: torch.Tensor  # (B, T) float: 1 up to and including the first EOS
    finished: torch.Tensor  # (B,) bool: emitted EOS
    prompt_len: int  # P

    @property
    def responses(self) -> torch.Tensor:  # (B, T)
        return self.sequences[:, self.prompt_len :]


@dataclass
class Experience:
    """Everything the K optimisation epochs need, fixed at rollout time. Row-indexable."""

    sequences: torch.Tensor  # (B, P+T) long
    attention_mask: torch.Tensor  # (B, P+T) long
    response_mask: torch.Tensor  # (B, T) float
    old_logprobs: torch.Tensor  # (B, T) log pi_old(a_t | s_t), at the sampling temperature
    ref_logprobs: torch.Tensor  # (B, T) log pi_ref(a_t | s_t)
    old_values: torch.Tensor  # (B, T) V_old(s_t)
    rewards: torch.Tensor  # (B, T) -beta * KL_t, plus the score at the last real token
    advantages: torch.Tensor  # (B, T) GAE, whitened when configured
    returns: torch.Tensor  # (B, T) advantages (before whitening) + old values
    prompt_len: int  # P

    @property
    def responses(self) -> torch.Tensor:  # (B, T)
        return self.sequences[:, self.prompt_len :]

    def __len__(self) -> int:
        return self.sequences.size(0)

    def select(self, idx: torch.Tensor) -> "Experience":
        """The rows `idx` (a (b,) long tensor) as a new Experience."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        return Experience(**{k: (v[idx] if isinstance(v, torch.Tensor) else v) for k, v in kw.items()})
