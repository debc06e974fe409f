"""Rankings as tiers: `((1,), (0, 2))` means completion 1 is best and 0 and 2 tie below it.

Pure functions: validation of submitted rankings and thumbs, and the rank/score views the maths uses.
"""

from __future__ import annotations

from typing import Mapping, Sequence

Tiers = tuple[tuple[int, ...], ...]


class InvalidJudgement(ValueError):
    """A submitted ranking/thumbs/flag that does not fit the item; the message says what is wrong."""


def normalize_ranking(ranking: Sequence[int | Sequence[int]], ids: Sequence[int]) -> Tiers:
    """Map a ranking over completion `ids` (tiers best first; a bare id is a tier of one) to positions.

    Must be a permutation of `ids`, or ties thereof (every id exactly once, no empty tier).
    """
    if len(ids) < 2:
        raise InvalidJudgement("an item with one completion cannot be ranked; use thumbs mode")
    index = {cid: pos for pos, cid in enumerate(ids)}
    seen: list[int] = []
    tiers = []
    for t, tier in enumerate(ranking):
        members = [tier] if isinstance(tier, int) else list(tier)
        if not members:
            raise InvalidJudgement(f"ranking tier {t + 1} is empty")
        unknown = [c for c in members if c not in index]
        if unknown:
            raise InvalidJudgement(
                f"ranking names completion(s) {unknown} that are not in this item; expected {sorted(ids)}"
            )
        seen += members
        tiers.append(tuple(sorted(index[c] for c in members)))
    dupes = sorted({c for c in seen if seen.count(c) > 1})
    if dupes:
        raise InvalidJudgement(f"ranking lists completion(s) {dupes} more than once")
    missing = sorted(set(ids) - set(seen))
    if missing:
        raise InvalidJudgement(f"ranking leaves out completion(s) {missing}; rank all {len(ids)} (ties allowed)")
    return tuple(tiers)


def normalize_thumbs(thumbs: Mapping[int, int], ids: Sequence[int]) -> tuple[int, ...]:
    """Map `{completion_id: +1|-1}` covering every completion to votes by position."""
    if set(thumbs) != set(ids):
        missing, unknown = sorted(set(ids) - set(thumbs)), sorted(set(thumbs) - set(ids))
        parts = [f"missing completion(s) {missing}"] if missing else []
        parts += [f"unknown completion(s) {unknown}"] if unknown else []
        raise InvalidJudgement("thumbs must rate every completion of the item exactly once: " + "; ".join(parts))
    bad = {c: v for c, v in thumbs.items() if v not in (1, -1)}
    if bad:
        raise InvalidJudgement(f"thumbs values must be +1 (up) or -1 (down), got {bad}")
    return tuple(thumbs[c] for c in ids)


def fractional_ranks(tiers: Tiers, n: int) -> list[float]:
    """1-based rank per position; tied positions share the mean of the ranks they span."""
    ranks = [0.0] * n
    start = 1
    for tier in tiers:
        mean = start + (len(tier) - 1) / 2
        for pos in tier:
            ranks[pos] = mean
        start += len(tier)
    return ranks


def borda_points(tiers: Tiers, n: int) -> list[float]:
    """Borda points per position: completions ranked strictly below, plus half of those tied with it."""
    pts = [0.0] * n
    below = n
    for tier in tiers:
        below -= len(tier)
        for pos in tier:
            pts[pos] = below + (len(tier) - 1) / 2
    return pts


def tiers_from_scores(scores: Sequence[float], higher_is_better: bool = True, tol: float = 1e-9) -> Tiers:
    """Group positions with equal (within `tol`) scores into tiers, best first."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i] if higher_is_better else scores[i])
    tiers: list[list[int]] = []
    for i in order:
        if tiers and abs(scores[tiers[-1][0]] - scores[i]) <= tol:
            tiers[-1].append(i)
        else:
            tiers.append([i])
    return tuple(tuple(sorted(t)) for t in tiers)
