"""AI labelers (constitutional AI) in the same tables as people."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from rlhf.feedback.store.labeling import Conflict, NotFound, hash_token
from rlhf.feedback.tables import Assignment, Item, Judgement, Labeler, Project

# --------------------------------------------------------------------------- AI labelers (constitutional AI)
# A model labels through the same tables and `submit_judgement` as people, outside the k human slots
# (Item.n_assigned is not touched); its judgements carry a confidence and details.


def get_or_create_ai_labeler(s: Session, name: str, model: str) -> Labeler:
    """The AI labeler `name` (created on first use, with a random token nobody holds)."""
    lab = s.scalar(select(Labeler).where(Labeler.name == name))
    if lab is not None:
        if lab.kind != "ai":
            raise Conflict(f"labeler {name!r} exists and is a person; choose another name for the AI labeler")
        return lab
    lab = Labeler(name=name, token_hash=hash_token(secrets.token_urlsafe(32)), kind="ai", model=model)
    s.add(lab)
    s.flush()
    return lab


def ai_labeler_models(s: Session) -> dict[str, str]:
    return {name: model or "" for name, model in s.execute(select(Labeler.name, Labeler.model).where(Labeler.kind == "ai"))}


def assign_to_ai(s: Session, labeler: Labeler, item: Item) -> Assignment:
    """The AI labeler's assignment for `item` (reused if it exists); human slots stay free."""
    if labeler.kind != "ai":
        raise ValueError(f"{labeler.name!r} is a human labeler; people claim items with next_assignment")
    a = s.scalar(select(Assignment).where(Assignment.item_id == item.id, Assignment.labeler_id == labeler.id))
    if a is None:
        a = Assignment(project_id=item.project_id, item_id=item.id, labeler_id=labeler.id)
        s.add(a)
        s.flush()
    return a


def project_items(s: Session, project: Project) -> list[Item]:
    """Every item of the project with its completions, in id order."""
    return list(s.scalars(select(Item).where(Item.project_id == project.id).order_by(Item.id)
                          .options(selectinload(Item.completions))))


@dataclass(frozen=True)
class ItemJudgement:
    """One judgement of an item, a person's or an AI's (ranking: tiers of completion positions, best first)."""

    labeler: str
    labeler_kind: str
    kind: str
    ranking: tuple[tuple[int, ...], ...] | None
    thumbs: tuple[int, ...] | None
    flag_reason: str | None
    confidence: float | None
    details: dict | None


def item_judgements(s: Session, project: Project, item_id: int) -> tuple[Item, list[ItemJudgement]]:
    """An item of `project` with every judgement on it (people and AI), for the audit page."""
    item = s.scalar(select(Item).where(Item.id == item_id, Item.project_id == project.id).options(selectinload(Item.completions)))
    if item is None:
        raise NotFound(f"no item {item_id} in project {project.name!r}")
    rows = s.execute(
        select(Labeler.name, Labeler.kind, Judgement).join(Assignment, Judgement.assignment_id == Assignment.id)
        .join(Labeler, Assignment.labeler_id == Labeler.id).where(Assignment.item_id == item.id).order_by(Labeler.kind, Labeler.name)
    )
    return item, [
        ItemJudgement(name, kind, j.kind, tuple(tuple(t) for t in j.ranking) if j.ranking else None,
                      tuple(j.thumbs) if j.thumbs else None, j.flag_reason, j.confidence, j.details)
        for name, kind, j in rows
    ]


def ai_confidences(s: Session, project: Project, labeler: Labeler) -> dict[int, float | None]:
    """Item id -> the AI labeler's confidence, for every item it judged in `project` (its keys: the judged items)."""
    q = select(Assignment.item_id, Judgement.confidence).join(Judgement, Judgement.assignment_id == Assignment.id)
    return dict(s.execute(q.where(Assignment.project_id == project.id, Assignment.labeler_id == labeler.id)).tuples().all())
