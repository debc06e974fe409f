"""Agreement metrics against hand-computed and published values."""

from __future__ import annotations

import math

import pytest

from rlhf.feedback.agreement import Rating, agreement_report, flag_outliers, kendall_tau_b, krippendorff_alpha
from rlhf.feedback.config import AgreementConfig

# Design notes: positions 0 = "nothing you can do", 1 = "air conditioning", 2 = "not too hot".
AGREE = ((1,), (0,), (2,))     # labelers 1 and 2
DISSENT = ((2,), (0,), (1,))   # labeler 3


def test_kendall_tau_b_hand_values():
    assert kendall_tau_b([1, 2, 3], [1, 2, 3]) == 1.0
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == -1.0
    # one swapped neighbour in 4: C=5, D=1 -> (5-1)/6
    assert kendall_tau_b([1, 2, 3, 4], [2, 1, 3, 4]) == pytest.approx(4 / 6)
    # ties in x: x=(1,1,3), y=(1,2,3): n0=3, tied_x=1, C=2, D=0 -> 2/sqrt(2*3)
    assert kendall_tau_b([1, 1, 3], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))


def test_krippendorff_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", 4 coders x 12 units, with gaps.
    n = None
    coders = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
        [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n],
    ]
    units = [[v for v in col if v is not None] for col in zip(*coders)]
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)


def test_krippendorff_design_notes_by_hand():
    # Units = completions, values = ranks. o11=1, o13=o31=2, o22=3, o33=1; n_c = 3 each, n = 9.
    # Ordinal d^2: d12 = d23 = 3^2 = 9, d13 = 6^2 = 36. D_o sum = 2*2*36 = 144;
    # D_e sum = 2*(9*9 + 9*36 + 9*9) = 972; alpha = 1 - 8*144/972 = -5/27.
    units = [[1, 1, 3], [2, 2, 2], [3, 3, 1]]
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(-5 / 27)
    assert krippendorff_alpha([[1, 1], [2, 2], [3, 3]], "ordinal") == pytest.approx(1.0)
    assert math.isnan(krippendorff_alpha([[1, 1], [1, 1]]))  # no variation: undefined


def test_design_notes_flags_third_labeler():
    ratings = [Rating("hot", "l1", 3, AGREE), Rating("hot", "l2", 3, AGREE), Rating("hot", "l3", 3, DISSENT)]
    report = agreement_report(ratings)
    scores = {a.labeler: a.score for a in report.labelers}
    assert scores == {"l1": 1.0, "l2": 1.0, "l3": -1.0}  # consensus (Borda 4/3, 1, 2/3) = aircon > nothing > not hot
    assert report.flagged == ["l3"]
    assert report.alpha == pytest.approx(-5 / 27)
    excluded = agreement_report(ratings, exclude=["l3"])
    assert excluded.alpha == pytest.approx(1.0)  # the two who agree
    assert excluded.flagged == ["l3"] and [a.excluded for a in excluded.labelers] == [False, False, True]


def test_flag_outliers_rules():
    assert flag_outliers({"a": 0.8, "b": 0.7, "c": 0.75, "d": -0.4}) == {"d"}
    assert flag_outliers({"a": 0.8, "b": 0.7, "c": 0.45}) == set()  # 0.3 below: within min_gap
    assert flag_outliers({"a": 1.0, "b": -1.0}) == set()             # two labelers: cannot tell who is off
    # others spread widely: the MAD term widens the margin
    assert flag_outliers({"a": 0.9, "b": 0.1, "c": 0.5, "d": -0.2}, min_gap=0.5) == set()


def test_min_items_leaves_unscored_labelers_unflagged():
    ratings = [Rating(i, n, 3, AGREE) for i in range(3) for n in ("l1", "l2")] + [Rating(0, "l3", 3, DISSENT)]
    report = agreement_report(ratings, cfg=AgreementConfig(min_items=2))
    by = {a.labeler: a for a in report.labelers}
    assert by["l3"].score is None and not by["l3"].flagged and by["l3"].items == 1


def test_thumbs_agreement():
    # item x: l1, l2 say (up, down), l3 says (down, up); majority = (up, down).
    ratings = [Rating("x", "l1", 2, thumbs=(1, -1)), Rating("x", "l2", 2, thumbs=(1, -1)),
               Rating("x", "l3", 2, thumbs=(-1, 1))]
    report = agreement_report(ratings)
    assert {a.labeler: a.score for a in report.labelers} == {"l1": 1.0, "l2": 1.0, "l3": -1.0}
    assert report.alpha_metric == "nominal" and report.flagged == ["l3"]
    # units (1,1,-1), (-1,-1,1): o(1,1)=o(-1,-1)=1, o(1,-1)=o(-1,1)=2, n=6 -> alpha = 1 - 5*4/18
    assert report.alpha == pytest.approx(1 - 5 * 4 / 18)


def test_labeler_who_ties_everything_is_counted_and_flagged():
    ALL_TIED = ((0, 1, 2),)
    ratings = []
    for item in range(4):
        ratings += [Rating(item, "l1", 3, AGREE), Rating(item, "l2", 3, AGREE), Rating(item, "lazy", 3, ALL_TIED)]
    report = agreement_report(ratings)
    by = {a.labeler: a for a in report.labelers}
    # tau-b of an all-tied ranking is undefined: no score, but the items are counted, not skipped
    assert by["lazy"].score is None and by["lazy"].undefined == 4 and by["lazy"].items == 4
    assert by["lazy"].tie_rate == 1.0 and by["l1"].tie_rate == 0.0
    assert report.flagged == ["lazy"] and "ties 100%" in by["lazy"].flag_reason
    assert by["l1"].flag_reason is None and by["l1"].undefined == 0


def test_tie_rate_by_hand_and_threshold():
    # ((0, 1), (2,)) ties 1 of 3 pairs; ((0,), (1,), (2,)) ties none: 1 tied pair of 6 in total
    ratings = [Rating("a", "l1", 3, ((0, 1), (2,))), Rating("b", "l1", 3, AGREE), Rating("a", "l2", 3, AGREE),
               Rating("b", "l2", 3, AGREE)]
    by = {a.labeler: a for a in agreement_report(ratings).labelers}
    assert by["l1"].tie_rate == pytest.approx(1 / 6) and not by["l1"].flagged
    by = {a.labeler: a for a in agreement_report(ratings, cfg=AgreementConfig(max_tie_rate=0.15)).labelers}
    assert by["l1"].flagged and by["l1"].flag_reason.startswith("ties 17%")
