import numpy as np
import pytest

from rlhf.evaluate.metrics import bootstrap_mean, distinct_n, reward_hacking_check, summarize, win_outcomes, win_rate


def test_win_outcomes_and_rate_by_hand():
    aligned, base = [0.9, 0.2, 0.5, 0.7], [0.1, 0.4, 0.5, 0.6]
    assert win_outcomes(aligned, base).tolist() == [1.0, 0.0, 0.5, 1.0]
    assert win_rate(aligned, base).value == pytest.approx(2.5 / 4)
    # lower-is-better judge (toxicity): aligned wins where its score is lower
    assert win_outcomes(aligned, base, higher_is_better=False).tolist() == [0.0, 1.0, 0.5, 0.0]


def test_bootstrap_ci_brackets_mean_and_is_degenerate_for_constants():
    est = bootstrap_mean([1.0] * 10)
    assert (est.value, est.low, est.high) == (1.0, 1.0, 1.0)
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 1.0, size=400)
    est = bootstrap_mean(x)
    assert est.low < x.mean() < est.high
    # the 95% interval of a mean is about +-1.96 * sd/sqrt(n)
    assert est.high - est.low == pytest.approx(2 * 1.96 * x.std() / np.sqrt(400), rel=0.15)


def test_distinct_n_by_hand():
    texts = ["a b a b", "a b c"]
    # unigrams: a b a b a b c -> 3 unique of 7; bigrams: ab ba ab | ab bc -> {ab, ba, bc} 3 of 5
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)
    assert distinct_n(["one"], 2) == 0.0


def test_summarize():
    s = summarize([1, 2, 3, 4])
    assert s["mean"] == 2.5 and s["median"] == 2.5 and s["std"] == pytest.approx(np.sqrt(1.25))


def test_reward_hacking_check():
    ok = reward_hacking_check(0.5, {"non-toxicity": 0.1}, kl=2.0, kl_target=1.0)
    assert not ok.flagged and ok.reasons == ()
    gold_down = reward_hacking_check(0.5, {"non-toxicity": -0.2, "sentiment": 0.1}, kl=None, kl_target=None)
    assert gold_down.flagged and len(gold_down.reasons) == 1 and "non-toxicity" in gold_down.reasons[0]
    # gold falling while the learned reward also fell is not hacking
    assert not reward_hacking_check(-0.1, {"non-toxicity": -0.2}, None, None).flagged
    far = reward_hacking_check(0.1, {}, kl=7.0, kl_target=2.0)
    assert far.flagged and "KL" in far.reasons[0]
