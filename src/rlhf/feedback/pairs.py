"""Consensus rankings and the pairwise data a reward model trains on. Pure functions over positions.

An item's rankings (one per labeler, as tiers) -> a consensus ranking (Borda count, or Bradley-Terry
strengths) -> all n(n-1)/2 pairs of completions, preferred first. Tied pairs are dropped or kept as
two half-weight pairs (the Bradley-Terry likelihood of a tie as half a win each way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple, Sequence

from rlhf.feedback.rankings import Tiers, borda_points, tiers_from_scores

Method = Literal["borda", "bradley_terry"]
TiePolicy = Literal["drop", "half"]
Weighting = Literal["uniform", "agreement"]


class IndexPair(NamedTuple):
    chosen: int
    rejected: int
    weight: float = 1.0


@dataclass(frozen=True)
class Consensus:
    tiers: Tiers
    """Consensus ranking, best first; positions with equal scores share a tier."""
    scores: tuple[float, ...]
    """Borda points (mean over rankings) or Bradley-Terry log-strengths, per position."""
    n_rankings: int


def borda_consensus(rankings: Sequence[Tiers], n: int) -> Consensus:
    """Borda count: mean points per position (ties split the points); equal means tie."""
    pts = [sum(borda_points(r, n)[i] for r in rankings) / len(rankings) for i in range(n)]
    return Consensus(tiers_from_scores(pts), tuple(pts), len(rankings))


def pairwise_wins(rankings: Sequence[Tiers], n: int) -> list[list[float]]:
    """wins[i][j] = rankings placing i above j, plus half of those tying them."""
    wins = [[0.0] * n for _ in range(n)]
    for r in rankings:
        rank = {pos: t for t, tier in enumerate(r) for pos in tier}
        for i in range(n):
            for j in range(n):
                if i != j:
                    wins[i][j] += 1.0 if rank[i] < rank[j] else 0.5 if rank[i] == rank[j] else 0.0
    return wins


def bradley_terry_consensus(
    rankings: Sequence[Tiers], n: int, prior: float = 0.1, iters: int = 500, tol: float = 1e-10
) -> Consensus:
    """Bradley-Terry strengths by Hunter's (2004) MM updates; `prior` pseudo-wins keep them finite."""
    wins = pairwise_wins(rankings, n)
    w = [[wins[i][j] + prior if i != j else 0.0 for j in range(n)] for i in range(n)]
    p = [1.0] * n
    for _ in range(iters):
        new = []
        for i in range(n):
            denom = sum((w[i][j] + w[j][i]) / (p[i] + p[j]) for j in range(n) if j != i)
            new.append(sum(w[i]) / denom)
        g = math.exp(sum(math.log(x) for x in new) / n)
        new = [x / g for x in new]
        done = max(abs(a - b) for a, b in zip(new, p)) < tol
        p = new
        if done:
            break
    scores = [math.log(x) for x in p]
    return Consensus(tiers_from_scores(scores, tol=1e-6), tuple(scores), len(rankings))


def consensus(rankings: Sequence[Tiers], n: int, method: Method = "borda") -> Consensus:
    if not rankings:
        raise ValueError("consensus needs at least one ranking")
    return bradley_terry_consensus(rankings, n) if method == "bradley_terry" else borda_consensus(rankings, n)


def pairs_from_tiers(tiers: Tiers, ties: TiePolicy = "drop") -> tuple[list[IndexPair], int]:
    """All n(n-1)/2 pairs of a ranking, preferred first. Returns (pairs, tied pairs seen)."""
    pairs, tied = [], 0
    for a, upper in enumerate(tiers):
        for i, x in enumerate(upper):
            for y in upper[i + 1:]:
                tied += 1
                if ties == "half":
                    pairs += [IndexPair(x, y, 0.5), IndexPair(y, x, 0.5)]
            for lower in tiers[a + 1:]:
                pairs += [IndexPair(x, y) for y in lower]
    return pairs, tied


def weight_by_agreement(pairs: Sequence[IndexPair], rankings: Sequence[Tiers], n: int) -> list[IndexPair]:
    """Scale each pair's weight by the share of rankings that prefer its chosen side (ties count half)."""
    wins = pairwise_wins(rankings, n)
    return [IndexPair(p.chosen, p.rejected, p.weight * wins[p.chosen][p.rejected] / len(rankings)) for p in pairs]


def thumbs_consensus(votes: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Majority vote per position: +1, -1, or 0 where up and down votes balance."""
    n = len(votes[0])
    return tuple((s > 0) - (s < 0) for s in (sum(v[i] for v in votes) for i in range(n)))


def pairs_from_thumbs(votes: Sequence[int]) -> tuple[list[IndexPair], int]:
    """Every thumbs-up completion over every thumbs-down one. Returns (pairs, pairs without a preference)."""
    ups = [i for i, v in enumerate(votes) if v > 0]
    downs = [i for i, v in enumerate(votes) if v < 0]
    pairs = [IndexPair(u, d) for u in ups for d in downs]
    n = len(votes)
    return pairs, n * (n - 1) // 2 - len(pairs)
