"""Consensus rankings, pairs and ranking validation against hand-computed values."""

from __future__ import annotations

import re

import pytest

from rlhf.feedback.pairs import (
    IndexPair,
    borda_consensus,
    bradley_terry_consensus,
    consensus,
    pairs_from_thumbs,
    pairs_from_tiers,
    thumbs_consensus,
    weight_by_agreement,
)
from rlhf.feedback.rankings import (
    InvalidJudgement,
    borda_points,
    fractional_ranks,
    normalize_ranking,
    normalize_thumbs,
    tiers_from_scores,
)

AGREE, DISSENT = ((1,), (0,), (2,)), ((2,), (0,), (1,))


def test_borda_points_and_ranks_with_ties():
    assert borda_points(((1,), (0,), (2,)), 3) == [1.0, 2.0, 0.0]
    assert borda_points(((0, 2), (1,)), 3) == [1.5, 0.0, 1.5]          # tie splits (2 + 1) / 2
    assert fractional_ranks(((0, 2), (1,)), 3) == [1.5, 3.0, 1.5]
    assert fractional_ranks(((3,), (0, 1, 2)), 4) == [3.0, 3.0, 3.0, 1.0]


def test_design_notes_consensus_gives_three_pairs():
    c = borda_consensus([AGREE, AGREE, DISSENT], 3)
    assert c.scores == pytest.approx((1.0, 4 / 3, 2 / 3))
    assert c.tiers == ((1,), (0,), (2,))
    pairs, tied = pairs_from_tiers(c.tiers)
    assert pairs == [IndexPair(1, 0), IndexPair(1, 2), IndexPair(0, 2)] and tied == 0


def test_bradley_terry_matches_borda_order_and_ties():
    bt = bradley_terry_consensus([AGREE, AGREE, DISSENT], 3)
    assert bt.tiers == ((1,), (0,), (2,))
    assert bt.scores[1] > bt.scores[0] > bt.scores[2]
    # perfectly opposed rankings: every strength equal -> one tier
    assert consensus([((0,), (1,)), ((1,), (0,))], 2, "bradley_terry").tiers == ((0, 1),)
    assert consensus([((0,), (1,)), ((1,), (0,))], 2, "borda").tiers == ((0, 1),)


def test_pairs_all_n_choose_2_with_ties_dropped_or_halved():
    tiers = ((3,), (0, 2), (1,))
    pairs, tied = pairs_from_tiers(tiers)
    assert tied == 1 and len(pairs) == 4 * 3 // 2 - 1
    assert set(pairs) == {IndexPair(3, 0), IndexPair(3, 2), IndexPair(3, 1), IndexPair(0, 1), IndexPair(2, 1)}
    half, tied = pairs_from_tiers(tiers, "half")
    assert tied == 1 and len(half) == 7
    assert IndexPair(0, 2, 0.5) in half and IndexPair(2, 0, 0.5) in half


def test_weight_by_agreement():
    pairs, _ = pairs_from_tiers(((1,), (0,), (2,)))
    weighted = weight_by_agreement(pairs, [AGREE, AGREE, DISSENT], 3)
    # 1>0: 2 of 3 rankings; 1>2: 2 of 3; 0>2: 2 of 3 (the dissenter has 2 > 0)
    assert [round(p.weight, 6) for p in weighted] == [round(2 / 3, 6)] * 3
    tie = weight_by_agreement([IndexPair(0, 1)], [((0, 1),), ((0,), (1,))], 2)
    assert tie[0].weight == pytest.approx(0.75)  # one tie (half) + one win, over 2


def test_thumbs_pairs():
    votes = thumbs_consensus([(1, -1, 1, -1), (1, -1, -1, -1), (1, 1, 1, -1)])
    assert votes == (1, -1, 1, -1)
    pairs, none = pairs_from_thumbs(votes)
    assert set(pairs) == {IndexPair(0, 1), IndexPair(0, 3), IndexPair(2, 1), IndexPair(2, 3)} and none == 2
    assert thumbs_consensus([(1, -1), (-1, -1)]) == (0, -1)
    assert pairs_from_thumbs((1, 1)) == ([], 1)


def test_normalize_ranking_accepts_permutations_and_ties():
    ids = [10, 11, 12]
    assert normalize_ranking([11, 10, 12], ids) == ((1,), (0,), (2,))
    assert normalize_ranking([[12, 10], 11], ids) == ((0, 2), (1,))
    assert normalize_ranking([[10, 11, 12]], ids) == ((0, 1, 2),)


@pytest.mark.parametrize("ranking, message", [
    ([10, 11], "leaves out completion(s) [12]"),
    ([10, 11, 12, 10], "more than once"),
    ([10, 11, 99], "not in this item"),
    ([10, [], 11, 12], "tier 2 is empty"),
])
def test_normalize_ranking_rejects(ranking, message):
    with pytest.raises(InvalidJudgement, match=re.escape(message)):
        normalize_ranking(ranking, [10, 11, 12])


def test_normalize_thumbs():
    assert normalize_thumbs({5: 1, 6: -1}, [5, 6]) == (1, -1)
    with pytest.raises(InvalidJudgement, match="missing"):
        normalize_thumbs({5: 1}, [5, 6])
    with pytest.raises(InvalidJudgement, match=r"\+1"):
        normalize_thumbs({5: 1, 6: 0}, [5, 6])


def test_tiers_from_scores():
    assert tiers_from_scores([0.2, 0.9, 0.2]) == ((1,), (0, 2))
    assert tiers_from_scores([0.2, 0.9, 0.25], higher_is_better=False) == ((0,), (2,), (1,))
    assert tiers_from_scores([0.2, 0.9, 0.25], tol=0.1) == ((1,), (0, 2))
