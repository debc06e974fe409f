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


def test_policy_comparison_samples_and_scores_under_the_system_prompt(tiny_lm, monkeypatch):
    # SFT trains with the run's system prompt, so its measurement must sample and score under the same one
    import rlhf.judges
    from rlhf.constitutional import measure
    from rlhf.generation import SamplingConfig, encode_prompts

    model, tok = tiny_lm
    sampled, scored = [], []
    monkeypatch.setattr(measure, "encode_prompts", lambda *a: sampled.append(a[3]) or encode_prompts(*a))
    real = rlhf.judges.FluencyJudge
    monkeypatch.setattr(rlhf.judges, "FluencyJudge", lambda m, t, system, bs: scored.append(system) or real(m, t, system, bs))
    cfg = measure.MeasureConfig(sampling=SamplingConfig(max_new_tokens=2), batch_size=4, examples=1)
    relevance = lambda prompts, responses: [0.5] * len(prompts)  # noqa: E731
    out = measure.compare_policies(model, model, tok, ["hot house"], ["thank you", "hello"], relevance,
                                   FakeTox(_AnyText()), cfg, system="Be brief.")
    assert sampled == ["Be brief."] * 4 and scored == ["Be brief."]  # 2 policies x 2 sets; one judge
    # the same model on both sides, the same seeds: identical samples, so every paired difference is 0
    assert out["helpful_fluency"]["delta"]["value"] == 0.0 and out["helpful_fluency"]["before"] < 0


class _AnyText(dict):
    def __missing__(self, key):
        return 0.1
