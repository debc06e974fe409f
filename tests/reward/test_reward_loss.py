import math

import pytest
import torch

from rlhf.reward.loss import preference_loss
from rlhf.reward.metrics import pair_metrics


def nls(x: float) -> float:  # -log sigma(x)
    return math.log1p(math.exp(-x))


def test_loss_matches_hand_computed_values():
    rc, rr = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    assert float(preference_loss(rc, rr)) == pytest.approx((0.313262 + 1.313262) / 2, abs=1e-6)
    assert float(preference_loss(rc, rr, margin=0.5)) == pytest.approx((nls(0.5) + nls(-1.5)) / 2, abs=1e-6)
    per_pair_margin = preference_loss(rc, rr, margin=torch.tensor([1.0, 0.0]))
    assert float(per_pair_margin) == pytest.approx((nls(0) + nls(-1)) / 2, abs=1e-6)
    w = torch.tensor([3.0, 1.0])
    assert float(preference_loss(rc, rr, weights=w)) == pytest.approx((3 * nls(1) + nls(-1)) / 4, abs=1e-6)
    # centering: 0.1 * mean((2+1)^2, (0+1)^2) = 0.5
    assert float(preference_loss(rc, rr, center_coef=0.1)) == pytest.approx((nls(1) + nls(-1)) / 2 + 0.5, abs=1e-6)


def test_loss_gradient_is_minus_sigmoid_of_minus_margin():
    rc = torch.tensor([1.0], requires_grad=True)
    preference_loss(rc, torch.tensor([0.0])).backward()
    assert float(rc.grad) == pytest.approx(-1 / (1 + math.e), abs=1e-6)  # -sigma(-1)


def test_pair_metrics_accuracy_margin_and_calibration():
    m = pair_metrics(torch.tensor([1.0, 0.0, 3.0, 0.0]), torch.tensor([0.0, 0.0, 0.0, 2.0]))
    # margins 1, 0 (tie = half), 3, -2
    assert m.n == 4
    assert m.accuracy == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    assert m.mean_margin == pytest.approx(0.5)
    bins = {(b.lo, b.hi): b for b in m.calibration}
    assert bins[(0.0, 0.25)].count == 1 and bins[(0.0, 0.25)].observed == 0.5
    assert bins[(1.0, 2.0)].predicted == pytest.approx(1 / (1 + math.exp(-1)))
    two_four = bins[(2.0, 4.0)]  # |3| right, |-2| wrong
    assert two_four.count == 2 and two_four.observed == 0.5
    assert two_four.predicted == pytest.approx((1 / (1 + math.exp(-3)) + 1 / (1 + math.exp(-2))) / 2)
    assert sum(b.count for b in m.calibration) == 4
    assert m.loss == pytest.approx((nls(1) + nls(0) + nls(3) + nls(-2)) / 4, abs=1e-6)
    assert "[2, 4)" in m.table()
