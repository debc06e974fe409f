"""The CAI measurements against hand-computed values."""

import pytest

from rlhf.constitutional.ai_feedback import ItemVerdict, PairVerdict, verdict_pairs
from rlhf.constitutional.measure import cluster_bootstrap_mean, judge_vs_gold, paired, scores_vs_gold, share


class FakeTox:
    def __init__(self, table):
        self.table = table

    def score(self, texts):
        return [self.table[t] for t in texts]


TOX = FakeTox({"clean": 0.0, "toxic": 0.9, "mid": 0.5, "a": 0.1, "b": 0.2})
ITEM = ItemVerdict("i1", "p", ("clean", "toxic", "mid"), "polite", (
    PairVerdict(0, 1, 0.8, 0.3),  # p = (0.8 + 0.7) / 2 = 0.75: prefers clean, in both orders
    PairVerdict(0, 2, 0.6, 0.6),  # p = 0.5 exactly; picks (A) in both orders: a flip
    PairVerdict(1, 2, 0.3, 0.9),  # p = (0.3 + 0.1) / 2 = 0.2: prefers mid, in both orders
))
OTHER = ItemVerdict("i2", "q", ("a", "b"), "polite", (PairVerdict(0, 1, 0.9, 0.9),))  # gold too close; a flip


def test_item_verdict_ranking_confidence_and_pairs():
    assert [round(v.p, 6) for v in ITEM.pairs] == [0.75, 0.5, 0.2]
    assert [v.consistent for v in ITEM.pairs] == [True, False, True]
    # summed win probability: clean 0.75 + 0.5, toxic 0.25 + 0.2, mid 0.5 + 0.8
    assert ITEM.ranking() == ((2,), (0,), (1,))
    assert ITEM.confidence == pytest.approx((0.75 + 0.5 + 0.8) / 3)
    pairs, dropped = verdict_pairs([ITEM], min_confidence=0.0)
    assert dropped == 1 and [(p["chosen"], p["rejected"]) for p in pairs] == [("clean", "toxic"), ("mid", "toxic")]
    assert pairs[1]["metadata"]["p_chosen"] == 0.8
    assert verdict_pairs([ITEM], min_confidence=0.55)[1] == 2  # |2p - 1| = 0.5 is unsure too


def test_judge_vs_gold_by_hand():
    m = judge_vs_gold([ITEM, OTHER], TOX, margin=0.3)
    # clear pairs: (clean, toxic) agrees, (clean, mid) is a 0.5 tie -> no, (toxic, mid) agrees
    assert m["clear_pairs"] == 3 and m["agreement"]["value"] == pytest.approx(2 / 3)
    assert m["first_order_agreement"]["value"] == pytest.approx(1.0)  # A-first alone: 0.8, 0.6, 0.3 all point the gold way
    assert m["compared_pairs"] == 4 and m["position_bias"]["value"] == pytest.approx(0.5)


def test_scores_vs_gold_and_statistics():
    g = scores_vs_gold([("i1", ("clean", "toxic", "mid"), (1.0, 0.0, 0.5)), ("i2", ("a", "b"), (0.0, 1.0))], TOX, 0.3)
    assert g["clear_pairs"] == 3 and g["agreement"]["value"] == 1.0
    p = paired([1.0, 2.0, 3.0], [1.0, 1.0, 1.0])
    assert (p["n"], p["before"], p["after"], p["delta"]["value"]) == (3, 2.0, 1.0, -1.0)
    assert -2.0 <= p["delta"]["low"] <= -1.0 <= p["delta"]["high"] <= 0.0
    with pytest.raises(ValueError, match="differ in size"):
        paired([1.0], [1.0, 2.0])
    e = cluster_bootstrap_mean([1.0, 1.0, 0.0, 0.0], ["x", "x", "y", "y"])
    assert e.value == 0.5 and e.low == 0.0 and e.high == 1.0  # two clusters: resamples are all-x, all-y or mixed
    assert share([True, False, True, True])["count"] == 3


def test_fluency_and_samples_use_the_system_prompt(tiny_lm, monkeypatch):
    # SFT trains with the run's system prompt, so its measurement must sample and score under the same one
    from rlhf.constitutional import measure
    from rlhf.generation import SamplingConfig, encode_prompts

    model, tok = tiny_lm
    prompts, answers = ["hot house", "thank you"], ["the quick brown fox", "hello there"]
    plain, system = measure.fluency(model, tok, prompts, answers), measure.fluency(model, tok, prompts, answers, system="Be brief.")
    assert all(a != b for a, b in zip(plain, system))
    seen = []
    monkeypatch.setattr(measure, "encode_prompts", lambda *a: seen.append(a[3]) or encode_prompts(*a))
    measure.sample_texts(model, tok, prompts, SamplingConfig(max_new_tokens=2), system="Be brief.")
    assert seen == ["Be brief."]
