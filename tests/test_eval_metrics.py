import numpy as np
import pytest

from rlhf.evaluate.metrics import (
    bootstrap_mean, distinct_n, paired_bootstrap, paired_bootstrap_distinct, summarize, win_outcomes, win_rate,
)


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


def test_grouped_bootstrap_resamples_whole_groups():
    # two groups with constant values: every resample mean is a weighted mix of the two group means
    x = [1.0, 1.0, 1.0, 0.0]
    est = bootstrap_mean(x, groups=["a", "a", "a", "b"], n_boot=500)
    assert est.value == pytest.approx(0.75)
    # resampling groups: {a,a} -> 1, {a,b} -> 3/4, {b,b} -> 0; item bootstrap would give many other values
    assert est.low == pytest.approx(0.0) and est.high == pytest.approx(1.0)
    # one group per item = the plain bootstrap, same draws
    y = np.random.default_rng(0).normal(size=50)
    assert bootstrap_mean(y, groups=list(range(50))).as_dict() == pytest.approx(bootstrap_mean(y).as_dict(), rel=0.2)


def test_paired_bootstrap_difference_and_relative():
    base = [1.0, 2.0, 3.0, 4.0]
    aligned = [b + 1.0 for b in base]  # every prompt improves by exactly 1
    pd = paired_bootstrap(aligned, base)
    assert (pd.base, pd.aligned) == (2.5, 3.5)
    assert (pd.diff.value, pd.diff.low, pd.diff.high) == (1.0, 1.0, 1.0)  # pairing removes the between-prompt spread
    assert pd.relative.value == pytest.approx(0.4) and pd.relative.low <= 0.4 <= pd.relative.high
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])


def test_paired_bootstrap_distinct_recomputes_on_resamples():
    base = ["a b c d", "e f g h", "i j k l"]
    same = ["x x x x", "x x x x", "x x x x"]
    pd = paired_bootstrap_distinct(same, base, n=1, n_boot=200)
    assert pd.base == 1.0 and pd.aligned == pytest.approx(1 / 12)
    assert pd.diff.high < -0.5  # collapse to one word is clear on every resample


def test_paired_bootstrap_distinct_resamples_a_prompts_samples_together():
    # two samples per prompt, each prompt's two identical: distinct-1 is 2/4 = 0.5 on every resample of prompts
    aligned = ["a b", "a b", "c d", "c d"]
    base = ["a b", "c d", "e f", "g h"]  # distinct 1.0 on any resample
    pd = paired_bootstrap_distinct(aligned, base, n=1, n_boot=200, group=2)
    assert (pd.aligned, pd.base) == (0.5, 1.0)
    assert (pd.diff.low, pd.diff.high) == (-0.5, -0.5)
    # resampling texts one by one would split a prompt's samples and see resamples without repeats
    assert paired_bootstrap_distinct(aligned, base, n=1, n_boot=200).diff.high > -0.5
    with pytest.raises(ValueError, match="2 per prompt"):
        paired_bootstrap_distinct(aligned[:3], base[:3], n=1, group=2)


def test_per_prompt_means_k_rows():
    from rlhf.evaluate.run import per_prompt

    assert per_prompt([1.0, 3.0, 0.0, 1.0], 2) == [2.0, 0.5]
    assert per_prompt([1.0, 3.0], 1) == [1.0, 3.0]
    with pytest.raises(ValueError, match="2 per prompt"):
        per_prompt([1.0, 2.0, 3.0], 2)
