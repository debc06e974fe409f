"""Evaluation metrics as pure functions over plain arrays (hand-checkable in tests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def bootstrap_mean(
    values: Sequence[float], n_boot: int = 2000, alpha: float = 0.05, seed: int = 0,
    groups: Sequence[Hashable] | None = None,
) -> Estimate:
    """Mean with a percentile bootstrap confidence interval (resampling items with replacement).

    With `groups`, whole groups are resampled (a cluster bootstrap): items of one group, e.g. the
    pairs of one prompt, are not independent, and resampling them one by one would make the CI too narrow.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    if groups is None:
        means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    else:
        _, g = np.unique(np.asarray([str(k) for k in groups]), return_inverse=True)
        sums, counts = np.bincount(g, weights=x), np.bincount(g).astype(float)  # per group
        pick = rng.integers(0, sums.size, size=(n_boot, sums.size))
        means = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Estimate(float(x.mean()), float(lo), float(hi))


@dataclass(frozen=True)
class PairedDifference:
    """aligned - base over the same prompts: the mean difference and the relative change, each with a CI."""

    base: float
    aligned: float
    diff: Estimate
    relative: Estimate
    """(mean aligned - mean base) / |mean base|, bootstrapped on the same resamples (nan when the base mean is 0)."""

    def as_dict(self) -> dict:
        return {"base": self.base, "aligned": self.aligned, "diff": self.diff.as_dict(), "relative": self.relative.as_dict()}


def paired_bootstrap(
    aligned: Sequence[float], base: Sequence[float], n_boot: int = 2000, alpha: float = 0.05, seed: int = 0,
) -> PairedDifference:
    """Paired percentile bootstrap over prompts: resample prompt indices, keep each prompt's two scores together."""
    a, b = np.asarray(aligned, dtype=float), np.asarray(base, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"aligned and base scores differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        nan = Estimate(float("nan"), float("nan"), float("nan"))
        return PairedDifference(float("nan"), float("nan"), nan, nan)
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_boot, a.size))
    return _paired(a.mean(), b.mean(), a[idx].mean(axis=1), b[idx].mean(axis=1), alpha)


def paired_bootstrap_distinct(
    aligned: Sequence[str], base: Sequence[str], n: int = 2, n_boot: int = 500, alpha: float = 0.05, seed: int = 0,
    group: int = 1,
) -> PairedDifference:
    """Distinct-n is a statistic of the whole set of texts: recompute it on each resample of the prompts.

    A resample keeps each drawn prompt once: a text drawn twice would count its own n-grams as repeats.
    Resamples are then smaller than the set (about 63%), which widens the CI a little (conservative).
    `group`: texts come `group` per prompt (prompt-major), and a prompt's texts are resampled together.
    """
    if len(aligned) % group or len(base) % group:
        raise ValueError(f"{len(aligned)} and {len(base)} texts are not {group} per prompt")
    ga = [[g for t in aligned[i : i + group] for g in _ngrams(t, n)] for i in range(0, len(aligned), group)]
    gb = [[g for t in base[i : i + group] for g in _ngrams(t, n)] for i in range(0, len(base), group)]
    if not ga:
        return paired_bootstrap([], [])
    idx = np.random.default_rng(seed).integers(0, len(ga), size=(n_boot, len(ga)))
    rows = [np.unique(row) for row in idx]
    ra = np.array([_distinct([ga[i] for i in row]) for row in rows])
    rb = np.array([_distinct([gb[i] for i in row]) for row in rows])
    return _paired(_distinct(ga), _distinct(gb), ra, rb, alpha)


def _paired(a_mean: float, b_mean: float, ra: np.ndarray, rb: np.ndarray, alpha: float) -> PairedDifference:
    q = [alpha / 2, 1 - alpha / 2]
    d = ra - rb
    lo, hi = np.quantile(d, q)
    diff = Estimate(float(a_mean - b_mean), float(lo), float(hi))
    if b_mean == 0 or np.any(rb == 0):
        rel = Estimate(float("nan"), float("nan"), float("nan"))
    else:
        rlo, rhi = np.quantile(d / np.abs(rb), q)
        rel = Estimate(float((a_mean - b_mean) / abs(b_mean)), float(rlo), float(rhi))
    return PairedDifference(float(b_mean), float(a_mean), diff, rel)


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


def _ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    toks = text.split()
    return [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def _distinct(grams: Sequence[Sequence[tuple]]) -> float:
    total = sum(len(g) for g in grams)
    return len({x for g in grams for x in g}) / total if total else 0.0


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams over the whole set of texts."""
    return _distinct([_ngrams(t, n) for t in texts])


def summarize(values: Sequence[float]) -> dict[str, float]:
    x = np.asarray(values, dtype=float)
    return {
        "mean": float(x.mean()), "std": float(x.std()), "median": float(np.median(x)),
        "p10": float(np.quantile(x, 0.1)), "p90": float(np.quantile(x, 0.9)),
    }
