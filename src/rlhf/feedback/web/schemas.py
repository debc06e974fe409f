"""Request and response bodies of the JSON API (Pydantic). Unknown fields are rejected (422)."""

from __future__ import annotations

import random
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlhf.feedback.tables import Assignment, Project

Tier = Union[int, list[int]]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JudgementIn(Strict):
    """Exactly one of `ranking`, `thumbs` or `flag_reason`."""

    ranking: Optional[list[Tier]] = Field(
        None, max_length=64, description="Completion ids, best first; a list of ids is a tie: [12, [10, 11]]."
    )
    thumbs: Optional[dict[int, Literal["up", "down", 1, -1]]] = Field(
        None, max_length=64, description="Per completion id: 'up' or 'down'."
    )
    flag_reason: Optional[str] = Field(None, min_length=1, max_length=1000, description="Why the item is unusable.")
    seconds: Optional[float] = Field(None, ge=0, le=86400, description="Time spent on the item.")

    @model_validator(mode="after")
    def _exactly_one(self) -> "JudgementIn":
        given = [k for k in ("ranking", "thumbs", "flag_reason") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"send exactly one of ranking, thumbs or flag_reason (got {given or 'none'})")
        if self.flag_reason is not None and not self.flag_reason.strip():
            raise ValueError("flag_reason must not be blank")
        return self

    def thumbs_values(self) -> dict[int, int] | None:
        if self.thumbs is None:
            return None
        return {cid: 1 if v in ("up", 1) else -1 for cid, v in self.thumbs.items()}


class JudgementOut(BaseModel):
    judgement_id: int
    assignment_id: int
    kind: str
    duplicate: bool
    """True when this was a retry of a judgement already stored (nothing new written)."""


class CompletionOut(BaseModel):
    id: int
    label: str
    text: str


class ItemOut(BaseModel):
    id: str
    prompt: str
    completions: list[CompletionOut]


class ProgressOut(BaseModel):
    done: int
    remaining: int


class ProjectOut(BaseModel):
    id: int
    name: str
    criterion: str
    mode: str
    labelers_per_item: int


class AssignmentOut(BaseModel):
    assignment_id: int
    project: ProjectOut
    item: ItemOut
    status: str


class NextOut(BaseModel):
    assignment: Optional[AssignmentOut]
    """null when this labeler has nothing left in the project."""
    progress: ProgressOut


class LabelerIn(Strict):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[\w.@ -]+$")


class LabelerCreated(BaseModel):
    id: int
    name: str
    token: str


class ExclusionIn(Strict):
    reason: str = Field("", max_length=1000)


def project_out(p: Project) -> ProjectOut:
    return ProjectOut(id=p.id, name=p.name, criterion=p.criterion, mode=p.mode, labelers_per_item=p.labelers_per_item)


def assignment_out(a: Assignment, project: Project, shuffle: bool) -> AssignmentOut:
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
