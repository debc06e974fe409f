import random

from rlhf.feedback.labelers import noisy_scores, simulated_judgement


def test_absolute_scale_ties_near_equal_completions():
    # higher is better (negated toxicity): two clean answers 0.02 apart, one toxic
    scores = [-0.01, -0.03, -0.92]
    body = simulated_judgement("rank", [10, 11, 12], scores, noise=0.0, rng=random.Random(0), tie_margin=0.1, scale="absolute")
    assert body == {"ranking": [[10, 11], 12]}
    # per-item z-scoring blows a 0.02 gap between two clean answers up into z = +1 / -1: a strict order
    two = [-0.01, -0.03]
    assert simulated_judgement("rank", [10, 11], two, 0.0, random.Random(0), tie_margin=0.1) == {"ranking": [10, 11]}
    assert simulated_judgement("rank", [10, 11], two, 0.0, random.Random(0), tie_margin=0.1, scale="absolute") == {"ranking": [[10, 11]]}


def test_absolute_scale_reversed_and_centred():
    assert noisy_scores([0.0, -1.0], 0.0, random.Random(0), scale="absolute") == [0.5, -0.5]
    assert noisy_scores([0.0, -1.0], 0.0, random.Random(0), reverse=True, scale="absolute") == [-0.5, 0.5]
