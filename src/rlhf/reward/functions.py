"""One reward interface for PPO and evaluation: `RewardFunction(prompts, completions) -> (B,) tensor`.

Implementations: a trained reward model, a sequence classifier's positive-class logit, a gold
scorer, or a plain Python function. `load_reward_function(spec)` builds one from a short string.
"""

from __future__ import annotations

import importlib
from typing import Callable, Protocol, Sequence, runtime_checkable

import torch

from rlhf.scorers import get_scorer


@runtime_checkable
class RewardFunction(Protocol):
    name: str
    normalization: tuple[float, float] | None
    """(mean, std) of this reward over a reference set, for PPO's optional normalisation."""

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:  # (B,) float32
        ...


class FunctionReward:
    """Wrap `fn(prompts, completions) -> list[float]`."""

    normalization = None

    def __init__(self, fn: Callable[[Sequence[str], Sequence[str]], Sequence[float]], name: str | None = None):
        self.fn, self.name = fn, name or getattr(fn, "__name__", "function")

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        return torch.as_tensor(list(self.fn(prompts, completions)), dtype=torch.float32)


class ScorerReward:
    """A gold scorer as a reward; for lower-is-better probabilities (toxicity) the reward is 1 - p."""

    normalization = None

    def __init__(self, scorer_name: str):
        self.scorer = get_scorer(scorer_name)
        self.name = self.scorer.name if self.scorer.higher_is_better else f"1-{self.scorer.name}"

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        s = torch.tensor(self.scorer.score(list(completions)), dtype=torch.float32)
        return s if self.scorer.higher_is_better else 1.0 - s


def load_reward_function(spec: str) -> RewardFunction:
    """Build a reward from a spec string.

    - `scorer:toxicity` / `scorer:sentiment`: a gold scorer (toxicity becomes 1 - p(toxic));
    - `python:package.module:function`: a plain function `(prompts, completions) -> floats`.
    """
    kind, _, rest = spec.partition(":")
    if kind == "scorer":
        return ScorerReward(rest)
    if kind == "python":
        module, _, fn = rest.rpartition(":")
        if not module or not fn:
            raise ValueError(f"reward spec {spec!r}: expected python:package.module:function")
        return FunctionReward(getattr(importlib.import_module(module), fn), name=fn)
    raise ValueError(f"unknown reward spec {spec!r}; expected scorer:NAME or python:module:fn")
