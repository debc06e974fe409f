"""Gold scorers: cheap programmatic judges used as simulated labelers and as evaluation metrics.

Every scorer maps texts to floats through the same `Scorer` interface.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable


@runtime_checkable
class Scorer(Protocol):
    name: str
    higher_is_better: bool

    def score(self, texts: Sequence[str]) -> list[float]: ...


class ToxicityScorer:
    """Probability that a text is toxic/offensive (alt-profanity-check's linear SVM, calibrated)."""

    name = "toxicity"
    higher_is_better = False

    def __init__(self) -> None:
        from profanity_check import predict_prob

        self._predict = predict_prob

    def score(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        return [float(p) for p in self._predict(list(texts))]


class SentimentScorer:
    """VADER compound sentiment in [-1, 1] (positive is friendlier)."""

    name = "sentiment"
    higher_is_better = True

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def score(self, texts: Sequence[str]) -> list[float]:
        return [float(self._analyzer.polarity_scores(t)["compound"]) for t in texts]


SCORERS = {"toxicity": ToxicityScorer, "sentiment": SentimentScorer}


def get_scorer(name: str) -> Scorer:
    try:
        return SCORERS[name]()
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; choose from {sorted(SCORERS)}") from None
