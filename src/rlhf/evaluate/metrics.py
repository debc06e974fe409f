"""Evaluation metrics as pure functions over plain arrays (hand-checkable in tests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def bootstrap_mean(values: Sequence[float], n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> Estimate:
    """Mean with a percentile bootstrap confidence interval (resampling items with replacement)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Estimate(float(x.mean()), float(lo), float(hi))


def win_outcomes(aligned: Sequence[float], base: Sequence[float], higher_is_better: bool = True) -> np.ndarray:
    """Per-prompt outcome of aligned vs base under a judge: 1 win, 0.5 tie, 0 loss."""
    a, b = np.asarray(aligned, dtype=float), np.asarray(base, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"aligned and base scores differ in shape: {a.shape} vs {b.shape}")
    diff = (a - b) if higher_is_better else (b - a)
    return np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))


def win_rate(aligned: Sequence[float], base: Sequence[float], higher_is_better: bool = True, seed: int = 0) -> Estimate:
    """Win rate of aligned over base (ties count half), with a bootstrap CI over prompts."""
    return bootstrap_mean(win_outcomes(aligned, base, higher_is_better), seed=seed)


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams over the whole set of texts."""
    grams = [tuple(toks[i : i + n]) for t in texts for toks in [t.split()] for i in range(len(toks) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def summarize(values: Sequence[float]) -> dict[str, float]:
    x = np.asarray(values, dtype=float)
    return {
        "mean": float(x.mean()), "std": float(x.std()), "median": float(np.median(x)),
        "p10": float(np.quantile(x, 0.1)), "p90": float(np.quantile(x, 0.9)),
    }


@dataclass(frozen=True)
class HackingCheck:
    flagged: bool
    reasons: tuple[str, ...]

    def as_dict(self) -> dict:
        return {"flagged": self.flagged, "reasons": list(self.reasons)}


def reward_hacking_check(
    learned_delta: float | None,
    gold_deltas: dict[str, float],
    kl: float | None,
    kl_target: float | None,
    kl_factor: float = 3.0,
    tolerance: float = 0.0,
) -> HackingCheck:
    """Flag signs of reward hacking (Gao et al. 2022, "Scaling laws for reward model overoptimization").

    `gold_deltas` are aligned - base changes of gold scores, already oriented so that positive is
    better. Flags: the learned reward rose while a gold score fell, or KL ran past `kl_factor` x target.
    """
    reasons = []
    if learned_delta is not None and learned_delta > 0:
        for name, d in gold_deltas.items():
            if d < -tolerance:
                reasons.append(f"learned reward rose by {learned_delta:+.3f} while gold {name} got worse by {-d:.3f}")
    if kl is not None and kl_target and kl > kl_factor * kl_target:
        reasons.append(f"KL to base {kl:.2f} is more than {kl_factor:g}x its target {kl_target:g}")
    return HackingCheck(bool(reasons), tuple(reasons))
