"""Principles for Constitutional AI (Bai et al. 2022, "Constitutional AI: Harmlessness from AI Feedback").

Each principle pairs a critique request with a revision request; the model critiques its own answer
against the principle, then rewrites it. The same principles phrase the AI-feedback comparisons.
A constitution may also carry few-shot examples (request, bad answer, critique, revision), shown to
the critic before its own conversation, as the paper does.

File format (YAML): a list of principles, or a mapping `{principles: [...], examples: [...]}`.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, fields
from typing import Sequence

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


@dataclass(frozen=True)
class Example:
    """A worked critique and revision, shown to the critic as earlier turns of the conversation."""

    request: str
    response: str
    critique: str
    revision: str


@dataclass(frozen=True)
class Constitution:
    principles: tuple[Principle, ...]
    examples: tuple[Example, ...] = ()


DEFAULT_PRINCIPLES: tuple[Principle, ...] = (
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

# Written for this project (red-team requests for insults and roasts); not taken from any data set.
DEFAULT_EXAMPLES: tuple[Example, ...] = (
    Example(
        "Roast my coworker who always microwaves fish at lunch.",
        "Your coworker is a disgusting slob with the manners of a seagull. His fish stinks almost as much as his personality.",
        "The answer calls the coworker a disgusting slob and mocks his personality. That is name-calling that could "
        "hurt him and make work awkward; the request can be met with light teasing instead.",
        "Fish in the office microwave is a classic! If you want to tease him, keep it light: \"Your lunch has its own "
        "postcode.\" Or just ask him kindly whether he could heat it up when the kitchen is quiet.",
    ),
    Example(
        "Write a brutally insulting review of my friend's band.",
        "Your friend's band is garbage. The singer sounds like a dying cat and the drummer should quit.",
        "It insults the singer and the drummer instead of reviewing the music. A review can be honest about what to "
        "improve without cruelty.",
        "Here is an honest, friendly review: the band has real energy and the drummer keeps a steady beat. The high "
        "notes need more practice and tighter endings would make the songs land. Keep playing!",
    ),
)

DEFAULT_CONSTITUTION = Constitution(DEFAULT_PRINCIPLES, DEFAULT_EXAMPLES)


def pick_principle(prompt_id: str, principles: Sequence[Principle], seed: int) -> Principle:
    """A principle per prompt, fixed by (seed, id) so resumed runs pick the same one."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()[:4], "little")
    return principles[random.Random(h).randrange(len(principles))]


def _line_of(node, index: int) -> int | None:
    """1-based line of the index-th item of a YAML sequence node (for error messages)."""
    if isinstance(node, yaml.SequenceNode) and index < len(node.value):
        return node.value[index].start_mark.line + 1
    return None


def _sub_node(node, key: str):
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if getattr(k, "value", None) == key:
                return v
    return None


def _entries(path: str, data, node, what: str, cls: type) -> list:
    """Validate a list of mappings with exactly the string fields of `cls`; errors name file, line and field."""
    names = [f.name for f in fields(cls)]
    if not isinstance(data, list):
        raise DataError(f"{path}: `{what}` must be a list of mappings with fields {', '.join(names)}")
    out = []
    for i, item in enumerate(data):
        line = _line_of(node, i)
        where = f"{path}:{line}" if line else path
        label = f"{what}[{i}]" + (f" ({item['name']!r})" if isinstance(item, dict) and isinstance(item.get("name"), str) else "")
        if not isinstance(item, dict):
            raise DataError(f"{where}: {label}: expected a mapping with fields {', '.join(names)}, got {type(item).__name__}")
        unknown = sorted(set(item) - set(names))
        if unknown:
            raise DataError(f"{where}: {label}: unknown field {unknown[0]!r} (expected {', '.join(names)})")
        for name in names:
            if name not in item:
                raise DataError(f"{where}: {label}: field {name!r} is missing")
            if not isinstance(item[name], str) or not item[name].strip():
                raise DataError(f"{where}: {label}: field {name!r} must be a non-empty string, got {item[name]!r}")
        out.append(cls(**{n: item[n].strip() for n in names}))
    return out


def load_constitution(path: str | None) -> Constitution:
    """The default constitution, or one from YAML: a list of principles, or {principles: [...], examples: [...]}."""
    if path is None:
        return DEFAULT_CONSTITUTION
    try:
        with open(path, encoding="utf-8") as fh:  # a stream, so YAML's own errors name the file too
            node = yaml.compose(fh)
            fh.seek(0)
            data = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"{path}: cannot read constitution: {e}") from e
    examples_data, examples_node = [], None
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"principles", "examples"})
        if unknown:
            raise DataError(f"{path}: unknown top-level field {unknown[0]!r} (expected principles, examples)")
        if "principles" not in data:
            raise DataError(f"{path}: field 'principles' is missing")
        examples_data, examples_node = data.get("examples") or [], _sub_node(node, "examples")
        data, node = data["principles"], _sub_node(node, "principles")
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a non-empty list of principles (name, critique, revision, comparison)")
    principles = _entries(path, data, node, "principles", Principle)
    seen: set[str] = set()
    for i, p in enumerate(principles):
        if p.name in seen:
            raise DataError(f"{path}:{_line_of(node, i)}: principles[{i}]: name {p.name!r} is used twice")
        seen.add(p.name)
    return Constitution(tuple(principles), tuple(_entries(path, examples_data, examples_node, "examples", Example)))
