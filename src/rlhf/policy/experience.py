"""Typed batches of an online step: Rollout (sampled) -> Scored (scored, log-probs, KL) -> Experience (trainable)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Rollout:
    """Sampled completions for B prompts; prompts left-padded to P, responses right-padded to T."""

    prompts: list[str]  # B raw prompt texts (what the reward sees); a prompt's k samples in consecutive rows
    completions: list[str]  # B decoded responses
    sequences: torch.Tensor  # (B, P+T) long
    attention_mask: torch.Tensor  # (B, P+T) long: 0 on left prompt padding and right response padding
    response_mask: torch.Tensor  # (B, T) float: 1 up to and including the first EOS
    finished: torch.Tensor  # (B,) bool: emitted EOS
    prompt_len: int  # P
    logprobs: torch.Tensor | None = None  # (B, T) the sampler's log pi_old(a_t | s_t) at its temperature, if it kept them
    entropy: torch.Tensor | None = None  # (B, T) the sampler's entropy of pi_old at each position, if it kept them
    hidden: torch.Tensor | None = None  # (B, T, H) the sampler's trunk states that predicted each token, if it kept them

    @property
    def responses(self) -> torch.Tensor:  # (B, T)
        return self.sequences[:, self.prompt_len :]


@dataclass
class Scored:
    """Phases 1-4 of an online step, shared by PPO, RLOO and GRPO: what each algorithm's advantages start from."""

    rollout: Rollout
    raw: torch.Tensor  # (B,) the reward function's scores
    scores: torch.Tensor  # (B,) training scores: normalised, EOS-penalised, whitened, clipped as configured
    old_logprobs: torch.Tensor  # (B, T) log pi_old(a_t | s_t) at the sampling temperature, 0 on padding
    ref_logprobs: torch.Tensor  # (B, T) log pi_ref(a_t | s_t), 0 on padding
    entropy: torch.Tensor  # (B, T) entropy of pi_old at each position, 0 on padding
    values: torch.Tensor | None  # (B, T) V_old(s_t) (PPO only)
    kl: torch.Tensor  # (B, T) per-token KL estimate (the configured estimator), 0 on padding
    beta: float  # the KL coefficient for this step

    @property
    def mask(self) -> torch.Tensor:  # (B, T)
        return self.rollout.response_mask

    @property
    def penalized(self) -> torch.Tensor:
        """(B,) sequence-level KL-shaped reward: score - beta * sum_t KL_t (RLOO, GRPO; PPO spreads it per token)."""
        return self.scores - self.beta * self.kl.sum(-1)


@dataclass
class Experience:
    """Everything the optimisation epochs need, fixed at rollout time. Row-indexable."""

    sequences: torch.Tensor  # (B, P+T) long
    attention_mask: torch.Tensor  # (B, P+T) long
    response_mask: torch.Tensor  # (B, T) float
    old_logprobs: torch.Tensor  # (B, T) log pi_old(a_t | s_t), at the sampling temperature
    ref_logprobs: torch.Tensor  # (B, T) log pi_ref(a_t | s_t)
    advantages: torch.Tensor  # (B, T) per token (PPO: GAE) or (B,) per sequence (RLOO, GRPO)
    prompt_len: int  # P
    old_values: torch.Tensor | None = None  # (B, T) V_old(s_t) (PPO)
    returns: torch.Tensor | None = None  # (B, T) advantages (before whitening) + old values (PPO)

    @property
    def responses(self) -> torch.Tensor:  # (B, T)
        return self.sequences[:, self.prompt_len :]

    def __len__(self) -> int:
        return self.sequences.size(0)

    def select(self, idx: torch.Tensor) -> "Experience":
        """The rows `idx` (a (b,) long tensor) as a new Experience."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        return Experience(**{k: (v[idx] if isinstance(v, torch.Tensor) else v) for k, v in kw.items()})
