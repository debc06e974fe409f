"""Annotator agreement: each labeler vs the consensus (Kendall tau-b), inter-annotator agreement
(Krippendorff's alpha) and flagging of labelers far below the others. Pure functions.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from statistics import median
from typing import Hashable, Iterable, Literal, Mapping, Sequence

from rlhf.feedback.config import AgreementConfig
from rlhf.feedback.pairs import consensus, thumbs_consensus
from rlhf.feedback.rankings import Tiers, fractional_ranks

Metric = Literal["nominal", "ordinal", "interval"]


@dataclass(frozen=True)
class Rating:
    """One labeler's judgement of one item: a ranking (tiers of positions) or thumbs (+1/-1 per position)."""

    item: Hashable
    labeler: str
    n: int
    tiers: Tiers | None = None
    thumbs: tuple[int, ...] | None = None


@dataclass(frozen=True)
class LabelerAgreement:
    labeler: str
    items: int
    """Items this labeler shares with at least one other (counted) labeler."""
    score: float | None
    """Mean Kendall tau-b vs the consensus (rank mode) or 2 x agreement-with-majority - 1 (thumbs), over the
    items where it is defined."""
    flagged: bool = False
    excluded: bool = False
    tie_rate: float | None = None
    """Rank mode: share of this labeler's completion pairs they ranked as tied; thumbs: share of their items
    with the same vote on every completion. None without judgements."""
    undefined: int = 0
    """Items where the score is undefined (tau-b of an all-tied ranking, or against an all-tied consensus)."""
    flag_reason: str | None = None
    """Why the labeler is flagged: far below the others' agreement, or ties (nearly) everything."""


@dataclass(frozen=True)
class AgreementReport:
    alpha: float | None
    """Krippendorff's alpha over the counted labelers (ordinal for ranks, nominal for thumbs)."""
    alpha_metric: str
    items: int
    """Items with at least two counted ratings."""
    labelers: tuple[LabelerAgreement, ...]

    @property
    def flagged(self) -> list[str]:
        return [a.labeler for a in self.labelers if a.flagged]


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's (1945) tau-b; pairs tied in either ranking shrink the denominator. NaN if undefined."""
    conc = disc = tied_x = tied_y = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            tied_x += dx == 0
            tied_y += dy == 0
            s = dx * dy
            conc += s > 0
            disc += s < 0
    n0 = n * (n - 1) // 2
    denom = math.sqrt((n0 - tied_x) * (n0 - tied_y))
    return (conc - disc) / denom if denom else math.nan


def _delta2(metric: Metric, values: Sequence[float], n_c: Sequence[float]) -> list[list[float]]:
    """Squared distance between value c and k (Krippendorff 2011, sec. 'difference functions')."""
    size = len(values)
    d = [[0.0] * size for _ in range(size)]
    for c in range(size):
        for k in range(size):
            if metric == "nominal":
                d[c][k] = float(c != k)
            elif metric == "interval":
                d[c][k] = (values[c] - values[k]) ** 2
            else:
                lo, hi = min(c, k), max(c, k)
                d[c][k] = (sum(n_c[lo:hi + 1]) - (n_c[lo] + n_c[hi]) / 2) ** 2
    return d


def krippendorff_alpha(units: Iterable[Sequence[float]], metric: Metric = "ordinal") -> float:
    """Krippendorff's alpha from the values each unit received (missing ratings simply absent).

    alpha = 1 - D_o / D_e from the coincidence matrix of pairable values. NaN when undefined
    (fewer than two pairable values, or a single value throughout).
    """
    units = [list(u) for u in units if len(u) >= 2]
    values = sorted({v for u in units for v in u})
    if len(values) < 2:
        return math.nan
    idx = {v: i for i, v in enumerate(values)}
    size = len(values)
    o = [[0.0] * size for _ in range(size)]
    for u in units:
        m = len(u)
        for a in range(m):
            for b in range(m):
                if a != b:
                    o[idx[u[a]]][idx[u[b]]] += 1 / (m - 1)
    n_c = [sum(row) for row in o]
    n = sum(n_c)
    d = _delta2(metric, values, n_c)
    observed = sum(o[c][k] * d[c][k] for c in range(size) for k in range(size))
    expected = sum(n_c[c] * n_c[k] * d[c][k] for c in range(size) for k in range(size))
    return 1 - (n - 1) * observed / expected if expected else math.nan


def flag_outliers(
    scores: Mapping[str, float], min_gap: float = 0.5, mad_z: float = 3.0, min_labelers: int = 3
) -> set[str]:
    """Labelers whose score lies below the median of the *others* by more than max(min_gap, z*1.4826*MAD).

    Leave-one-out, so the outlier does not pull the reference toward itself: the design notes' "third
    labeler who may have misunderstood the instructions" among two who agree.
    """
    if len(scores) < min_labelers:
        return set()
    flagged = set()
    for name, s in scores.items():
        others = [v for k, v in scores.items() if k != name]
        med = median(others)
        mad = median(abs(v - med) for v in others)
        if med - s > max(min_gap, mad_z * 1.4826 * mad):
            flagged.add(name)
    return flagged


def tie_share(r: Rating) -> tuple[int, int]:
    """(tied, total) pairs of completions in a ranking; thumbs: (1, 1) if every vote is the same, else (0, 1)."""
    if r.thumbs is not None:
        return int(len(set(r.thumbs)) == 1), 1
    tiers = r.tiers or ()
    return sum(len(t) * (len(t) - 1) // 2 for t in tiers), r.n * (r.n - 1) // 2


def _by_item(ratings: Iterable[Rating]) -> dict[Hashable, list[Rating]]:
    items: dict[Hashable, list[Rating]] = defaultdict(list)
    for r in ratings:
        items[r.item].append(r)
    return items


def agreement_report(
    ratings: Sequence[Rating], exclude: Iterable[str] = (), cfg: AgreementConfig = AgreementConfig()
) -> AgreementReport:
    """Score every labeler against the consensus of the non-excluded labelers, alpha over those, and flags.

    Rank mode: per item, the consensus (Borda or Bradley-Terry) includes the labeler being scored, so
    with three labelers one dissenter cannot tie the consensus; the score is the mean tau-b over items.
    Thumbs mode: the share of a labeler's votes matching the majority, as 2p - 1 on tau's scale.
    """
    exclude = set(exclude)
    thumbs = any(r.thumbs is not None for r in ratings)
    per_labeler: dict[str, list[float]] = defaultdict(list)
    undefined: dict[str, int] = defaultdict(int)
    ties: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in ratings:
        t, n_pairs = tie_share(r)
        ties[r.labeler][0] += t
        ties[r.labeler][1] += n_pairs
    units: list[list[float]] = []
    items_compared = 0
    for item_ratings in _by_item(ratings).values():
        counted = [r for r in item_ratings if r.labeler not in exclude]
        if len(counted) < 2:
            continue
        items_compared += 1
        n = counted[0].n
        if thumbs:
            cons = thumbs_consensus([r.thumbs for r in counted])
            for r in item_ratings:
                votes = [(v, c) for v, c in zip(r.thumbs, cons) if c != 0]
                if votes:
                    per_labeler[r.labeler].append(2 * sum(v == c for v, c in votes) / len(votes) - 1)
                else:
                    undefined[r.labeler] += 1
            units += [[r.thumbs[i] for r in counted] for i in range(n)]
        else:
            cons_ranks = fractional_ranks(consensus([r.tiers for r in counted], n, cfg.method).tiers, n)
            ranks = {r.labeler: fractional_ranks(r.tiers, n) for r in item_ratings}
            for r in item_ratings:
                tau = kendall_tau_b(ranks[r.labeler], cons_ranks)
                if math.isnan(tau):
                    undefined[r.labeler] += 1  # counted, so a labeler who ties everything is seen, not skipped
                else:
                    per_labeler[r.labeler].append(tau)
            units += [[ranks[r.labeler][i] for r in counted] for i in range(n)]
    scores = {k: sum(v) / len(v) for k, v in per_labeler.items() if len(v) >= cfg.min_items}
    counted_scores = {k: v for k, v in scores.items() if k not in exclude}
    flagged = flag_outliers(counted_scores, cfg.min_gap, cfg.mad_z, cfg.min_labelers)
    # An excluded labeler stays flagged if it is still far below the remaining labelers.
    for name in exclude & scores.keys():
        if flag_outliers(counted_scores | {name: scores[name]}, cfg.min_gap, cfg.mad_z, cfg.min_labelers) & {name}:
            flagged.add(name)
    reasons = {name: "agreement with the consensus far below the others'" for name in flagged}
    tie_rates = {name: t / n if n else None for name, (t, n) in ties.items()}
    for name, rate in tie_rates.items():
        n_items = len(per_labeler.get(name, ())) + undefined.get(name, 0)
        if rate is not None and rate >= cfg.max_tie_rate and n_items >= cfg.min_items:
            flagged.add(name)
            reasons[name] = f"ties {rate:.0%} of the completion pairs it ranks (limit {cfg.max_tie_rate:.0%})"
    names = sorted({r.labeler for r in ratings})
    rows = tuple(
        LabelerAgreement(
            name, len(per_labeler.get(name, ())) + undefined.get(name, 0), scores.get(name), name in flagged,
            name in exclude, tie_rates.get(name), undefined.get(name, 0), reasons.get(name),
        )
        for name in names
    )
    metric: Metric = "nominal" if thumbs else "ordinal"
    alpha = krippendorff_alpha(units, metric)
    return AgreementReport(None if math.isnan(alpha) else alpha, metric, items_compared, rows)


# --------------------------------------------------------------------------- AI labelers vs people


@dataclass(frozen=True)
class AIAgreement:
    """An AI labeler against the consensus of the counted human labelers (rank mode)."""

    labeler: str
    items: int
    """Items the AI judged that also have at least `min_humans` counted human rankings."""
    tau: float | None
    """Mean Kendall tau-b of the AI's ranking vs the human consensus."""
    pairs: int
    """Completion pairs that the human consensus orders strictly, on those items."""
    agree: int
    """Of those pairs, how many the AI orders the same way (an AI tie does not agree)."""

    @property
    def agreement(self) -> float | None:
        return self.agree / self.pairs if self.pairs else None


def ai_vs_consensus(
    ratings: Sequence[Rating], ai: Iterable[str], exclude: Iterable[str] = (), cfg: AgreementConfig = AgreementConfig(),
    min_humans: int = 1,
) -> list[AIAgreement]:
    """Score each AI labeler against the consensus of the non-excluded people; the AI is never part of it."""
    ai, exclude = set(ai), set(exclude)
    taus: dict[str, list[float]] = {name: [] for name in ai}
    counts = {name: [0, 0, 0] for name in ai}  # items, pairs, agree
    for item_ratings in _by_item(ratings).values():
        people = [r for r in item_ratings if r.labeler not in ai | exclude and r.tiers is not None]
        if len(people) < min_humans:
            continue
        n = people[0].n
        cons = fractional_ranks(consensus([r.tiers for r in people], n, cfg.method).tiers, n)
        for r in item_ratings:
            if r.labeler not in ai or r.tiers is None:
                continue
            mine, c = fractional_ranks(r.tiers, n), counts[r.labeler]
            tau = kendall_tau_b(mine, cons)
            if not math.isnan(tau):
                taus[r.labeler].append(tau)
            strict = [(i, j) for i in range(n) for j in range(i + 1, n) if cons[i] != cons[j]]
            c[0] += 1
            c[1] += len(strict)
            c[2] += sum((mine[i] - mine[j]) * (cons[i] - cons[j]) > 0 for i, j in strict)
    return [
        AIAgreement(name, counts[name][0], sum(taus[name]) / len(taus[name]) if taus[name] else None, counts[name][1], counts[name][2])
        for name in sorted(ai)
    ]
