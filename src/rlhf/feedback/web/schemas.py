"""Request and response bodies of the JSON API (Pydantic). Unknown fields are rejected (422)."""

from __future__ import annotations

import random
from typing import Annotated, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema, model_validator

from rlhf.feedback.store import AssignmentView
from rlhf.feedback.tables import Assignment, Project

Tier = Union[int, list[int]]
# Patterns are read as ECMA-262 by the spec's validators and as Rust regexes by Pydantic: they use only explicit
# classes (no \w, \s, \d, whose range differs by engine), and `$` is the end of the text in both.
WHITESPACE = r"\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
"""Exactly the characters Python's str.isspace() (and so str.strip()) treats as whitespace."""
CONTROL = r"\u0000-\u001f\u007f-\u009f"
CompletionKey = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,10}$")]


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text


# The schema's pattern ("has a character that is not whitespace") says what _not_blank checks.
FlagReason = Annotated[
    str, StringConstraints(max_length=1000), AfterValidator(_not_blank),
    WithJsonSchema({
        "type": "string", "pattern": f"[^{WHITESPACE}]", "maxLength": 1000, "description": "Why the item is unusable.",
    }),
]
EDGE = f"[^{CONTROL}{WHITESPACE}]"
NAME_PATTERN = f"^{EDGE}([^{CONTROL}\\u2028\\u2029]*{EDGE})?$"
"""No control characters, no whitespace at either end (so str.strip() leaves a name as it is)."""
JUDGEMENT_KINDS = ("ranking", "thumbs", "flag_reason")


class Strict(BaseModel):
    """Request bodies: unknown fields and type coercion are refused, so a body the schema accepts the server
    accepts, and the other way round."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _exactly_one_kind(schema: dict) -> None:
    for name in JUDGEMENT_KINDS:
        schema["properties"][name].pop("default", None)  # absent, never null
    schema["oneOf"] = [{"required": [name]} for name in JUDGEMENT_KINDS]


class JudgementIn(Strict):
    """Exactly one of `ranking`, `thumbs` or `flag_reason`."""

    model_config = ConfigDict(json_schema_extra=_exactly_one_kind)

    ranking: list[Tier] = Field(
        None, max_length=64, description="Completion ids, best first; a list of ids is a tie: [12, [10, 11]]."
    )
    thumbs: dict[CompletionKey, Literal["up", "down"]] = Field(
        None, max_length=64, json_schema_extra={"additionalProperties": False},
        description='Per completion id: "up" or "down", e.g. {"12": "up", "13": "down"}.',
    )
    flag_reason: FlagReason = None
    seconds: Optional[float] = Field(None, ge=0, le=86400, description="Time spent on the item.")

    @model_validator(mode="after")
    def _exactly_one(self) -> "JudgementIn":
        given = [k for k in JUDGEMENT_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"send exactly one of ranking, thumbs or flag_reason (got {given or 'none'})")
        return self

    def thumbs_values(self) -> dict[int, int] | None:
        if self.thumbs is None:
            return None
        return {int(cid): 1 if v == "up" else -1 for cid, v in self.thumbs.items()}


class Out(BaseModel):
    """Response bodies; a field's docstring is its description in the spec."""

    model_config = ConfigDict(use_attribute_docstrings=True)


class JudgementOut(Out):
    judgement_id: int
    assignment_id: int
    kind: Literal["rank", "thumbs", "flag"]
    duplicate: bool
    """True when this was a retry of a judgement already stored (nothing new written)."""


class CompletionOut(Out):
    id: int
    """The id to rank or vote on."""
    label: str
    """A, B, C... in the order shown to this labeler."""
    text: str


class ItemOut(Out):
    id: str
    """The item's id in the imported generations."""
    prompt: str
    completions: list[CompletionOut]


class ProgressOut(Out):
    done: int
    remaining: int
    """Items this labeler could still be given, their open one included."""


class ProjectOut(Out):
    id: int
    name: str
    criterion: str
    mode: Literal["rank", "thumbs"]
    labelers_per_item: int


class LabelerProjectOut(ProjectOut):
    done: int
    """Judgements this labeler has made in the project."""
    remaining: int


class AssignmentOut(Out):
    assignment_id: int
    project: ProjectOut
    item: ItemOut
    status: Literal["pending", "done"]


class NextOut(Out):
    assignment: Optional[AssignmentOut]
    """null when this labeler has nothing left in the project."""
    progress: ProgressOut


class MeOut(Out):
    id: int
    name: str


class AdminProjectOut(ProjectOut):
    items: int
    slots: int
    """items x labelers_per_item: the judgements the project needs."""
    judgements: int
    complete_items: int
    """Items with labelers_per_item judgements."""
    flagged: int
    """Judgements that flag their item as unusable."""


class LabelerProgressOut(Out):
    labeler_id: int
    name: str
    done: int
    pending: int
    flagged_items: int
    remaining: int
    """Items this labeler could still be given (a free slot, not seen by them), their open ones included."""


class LabelerAgreementOut(Out):
    labeler: str
    items: int
    """Items this labeler shares with others."""
    score: Optional[float]
    """Mean Kendall tau-b against the consensus (thumbs: 2p - 1); null when no item is shared."""
    flagged: bool
    excluded: bool


class AgreementOut(Out):
    alpha: Optional[float]
    """Krippendorff's alpha over the non-excluded labelers; null when undefined."""
    alpha_metric: str
    items: int
    labelers: list[LabelerAgreementOut]
    flagged: list[str]


class LabelerOut(Out):
    id: int
    name: str
    active: bool


class LabelerIn(Strict):
    name: str = Field(
        min_length=1, max_length=200, pattern=NAME_PATTERN,
        description="Any characters but control characters; no whitespace at either end.",
    )


class LabelerCreated(Out):
    id: int
    name: str
    token: str
    """The labeler's login token: shown once, stored hashed."""


class ExclusionIn(Strict):
    reason: str = Field("", max_length=1000)


def project_out(p: Project) -> ProjectOut:
    return ProjectOut(id=p.id, name=p.name, criterion=p.criterion, mode=p.mode, labelers_per_item=p.labelers_per_item)


def assignment_out(a: Assignment | AssignmentView, project: Project, shuffle: bool) -> AssignmentOut:
    """The item as this labeler sees it: completions in a per-assignment random order, lettered A, B, ..."""
    comps = list(a.item.completions)
    if shuffle:
        random.Random(a.id).shuffle(comps)
    return AssignmentOut(
        assignment_id=a.id, project=project_out(project), status=a.status,
        item=ItemOut(id=a.item.external_id, prompt=a.item.prompt, completions=[
            CompletionOut(id=c.id, label=chr(ord("A") + i) if i < 26 else str(i + 1), text=c.text)
            for i, c in enumerate(comps)
        ]),
    )
