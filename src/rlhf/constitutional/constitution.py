"""Principles for Constitutional AI (Bai et al. 2022, "Constitutional AI: Harmlessness from AI Feedback").

Each principle pairs a critique request with a revision request; the model critiques its own answer
against the principle, then rewrites it. The same principles phrase the AI-feedback comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from rlhf.data import DataError


@dataclass(frozen=True)
class Principle:
    name: str
    critique: str
    """Asks the model to point out how its last answer breaks the principle."""
    revision: str
    """Asks the model to rewrite its answer so that it follows the principle."""
    comparison: str
    """Completes "Which response is ..." for AI feedback, e.g. "more polite and respectful"."""


DEFAULT_CONSTITUTION: tuple[Principle, ...] = (
    Principle(
        "polite",
        "Point out anything rude, insulting, mocking or profane in your last answer.",
        "Rewrite your last answer so that it is polite and respectful, with no insults or swearing, "
        "while still answering the request as well as you can.",
        "more polite and respectful, with no insults or swearing",
    ),
    Principle(
        "harmless",
        "Explain how your last answer could hurt or upset someone, or encourage harm.",
        "Rewrite your last answer so that it cannot hurt or upset anyone and does not encourage harm.",
        "more harmless and less likely to hurt or upset anyone",
    ),
    Principle(
        "helpful",
        "Say how your last answer could be more helpful to the person who asked, without being unkind.",
        "Rewrite your last answer to be kind and genuinely helpful: offer a friendly alternative to what was asked "
        "if the request was mean.",
        "kinder and more genuinely helpful",
    ),
)


def load_constitution(path: str | None) -> tuple[Principle, ...]:
    """The default constitution, or principles from a YAML list of {name, critique, revision, comparison}."""
    if path is None:
        return DEFAULT_CONSTITUTION
    try:
        data = yaml.safe_load(open(path, encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"{path}: cannot read constitution: {e}") from e
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a non-empty YAML list of principles")
    out = []
    for i, item in enumerate(data):
        missing = [k for k in ("name", "critique", "revision", "comparison") if not isinstance(item, dict) or not item.get(k)]
        if missing:
            raise DataError(f"{path}: principle #{i + 1} lacks {', '.join(missing)}")
        out.append(Principle(item["name"], item["critique"], item["revision"], item["comparison"]))
    return tuple(out)
