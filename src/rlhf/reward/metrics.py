"""Held-out quality of a reward model: pairwise accuracy, margin, loss and a calibration table."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from rlhf.reward.loss import preference_loss

MARGIN_EDGES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, float("inf"))


@dataclass(frozen=True)
class CalibrationBin:
    """Pairs whose |r_c - r_r| falls in [lo, hi): the model's confidence vs how often it is right."""

    lo: float
    hi: float
    count: int
    predicted: float
    """Mean sigma(|margin|): the Bradley-Terry probability that the higher-scored text is preferred."""
    observed: float
    """Share of these pairs where the higher-scored text is the one humans chose."""


@dataclass(frozen=True)
class PairMetrics:
    n: int
    loss: float
    accuracy: float
    """Share of pairs with r_chosen > r_rejected (ties count one half)."""
    mean_margin: float
    """Mean of r_chosen - r_rejected."""
    ece: float
    """Expected calibration error over the margin buckets (count-weighted |predicted - observed|)."""
    calibration: tuple[CalibrationBin, ...]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["calibration"] = [asdict(b) | {"hi": b.hi if b.hi != float("inf") else None} for b in self.calibration]
        return d

    def table(self) -> str:
        rows = [f"{'margin':>12} {'pairs':>6} {'predicted':>9} {'observed':>8}"]
        for b in self.calibration:
            hi = "inf" if b.hi == float("inf") else f"{b.hi:g}"
            rows.append(f"{f'[{b.lo:g}, {hi})':>12} {b.count:>6} {b.predicted:>9.3f} {b.observed:>8.3f}")
        return "\n".join(rows)


def pair_metrics(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor, edges: Sequence[float] = MARGIN_EDGES
) -> PairMetrics:
    """Metrics from the rewards (P,) of chosen and rejected texts."""
    d = (r_chosen - r_rejected).double()  # (P,)
    correct = (d > 0).double() + 0.5 * (d == 0).double()  # (P,)
    conf = torch.sigmoid(d.abs())  # (P,)
    bins, ece = [], 0.0
    for lo, hi in zip(edges, edges[1:]):
        sel = (d.abs() >= lo) & (d.abs() < hi)
        k = int(sel.sum())
        if k:
            pred, obs = float(conf[sel].mean()), float(correct[sel].mean())
            bins.append(CalibrationBin(lo, hi, k, pred, obs))
            ece += k / len(d) * abs(pred - obs)
    return PairMetrics(
        n=len(d),
        loss=float(preference_loss(r_chosen.double(), r_rejected.double())),
        accuracy=float(correct.mean()),
        mean_margin=float(d.mean()),
        ece=ece,
        calibration=tuple(bins),
    )
