"""Progress, reading judgements out, and the seeded balanced pre-assignment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from sqlalchemy import and_, case, exists, func, select, update
from sqlalchemy.orm import Session, selectinload

from rlhf.feedback.store.labeling import _OPEN, _OWN, list_labelers
from rlhf.feedback.tables import Assignment, Completion, Exclusion, Item, Judgement, Labeler, Project

# --------------------------------------------------------------------------- progress and reading out


@dataclass(frozen=True)
class LabelerProgress:
    labeler_id: int
    name: str
    done: int
    pending: int
    flagged_items: int
    remaining: int
    """Items this labeler could still be given (a free slot and not seen by them)."""


@dataclass(frozen=True)
class ProjectProgress:
    items: int
    slots: int
    """items x k: judgements the project needs."""
    judgements: int
    complete_items: int
    """Items with k judgements."""
    flagged: int


def project_progress(s: Session, project: Project) -> ProjectProgress:
    items = s.scalar(select(func.count()).select_from(Item).where(Item.project_id == project.id)) or 0
    human = select(Labeler.id).where(Labeler.kind == "human")  # AI labels never fill the k human slots
    done = (
        select(Assignment.item_id, func.count().label("n")).where(
            Assignment.project_id == project.id, Assignment.status == "done", Assignment.labeler_id.in_(human)
        ).group_by(Assignment.item_id).subquery()
    )
    judgements = s.scalar(select(func.coalesce(func.sum(done.c.n), 0))) or 0
    complete = s.scalar(select(func.count()).select_from(done).where(done.c.n >= project.labelers_per_item)) or 0
    flagged = s.scalar(
        select(func.count()).select_from(Judgement).join(Assignment)
        .where(Assignment.project_id == project.id, Judgement.kind == "flag", Assignment.labeler_id.in_(human))
    ) or 0
    return ProjectProgress(items, items * project.labelers_per_item, judgements, complete, flagged)


def remaining_for(s: Session, labeler_id: int, project: Project) -> int:
    keys = {"labeler": labeler_id, "project": project.id, "k": project.labelers_per_item}
    return s.scalar(select(func.count()).select_from(Item).where(*_OPEN), keys) or 0


@dataclass(frozen=True)
class OwnProgress:
    done: int
    remaining: int
    """Items this labeler could still be given, their open ones included."""


_OWN_PROGRESS = select(
    select(func.count()).where(*_OWN, Assignment.status == "done").scalar_subquery(),
    select(func.count()).where(*_OWN, Assignment.status == "pending").scalar_subquery(),
    select(func.count()).select_from(Item).where(*_OPEN).scalar_subquery(),
)


def own_progress(s: Session, labeler_id: int, project: Project) -> OwnProgress:
    """One labeler's progress in one project, in one query (the labeling page shows it after every item)."""
    keys = {"labeler": labeler_id, "project": project.id, "k": project.labelers_per_item}
    done, pending, free = s.connection().execute(_OWN_PROGRESS, keys).one()
    return OwnProgress(done, pending + free)


def labeler_progress(s: Session, project: Project, labelers: Sequence[Labeler] | None = None) -> list[LabelerProgress]:
    """Per-labeler counts in `project` (all labelers by default)."""
    query = (
        select(
            Assignment.labeler_id,
            func.sum(case((Assignment.status == "done", 1), else_=0)),
            func.sum(case((Assignment.status == "pending", 1), else_=0)),
            func.sum(case((Judgement.kind == "flag", 1), else_=0)),
        ).outerjoin(Judgement, Judgement.assignment_id == Assignment.id)
        .where(Assignment.project_id == project.id).group_by(Assignment.labeler_id)
    )
    if labelers is None:
        labelers = list_labelers(s)
    else:
        query = query.where(Assignment.labeler_id.in_([lab.id for lab in labelers]))
    rows = s.execute(query)
    counts = {lid: (int(d or 0), int(p or 0), int(f or 0)) for lid, d, p, f in rows}
    out = []
    for lab in labelers:
        d, p, f = counts.get(lab.id, (0, 0, 0))
        out.append(LabelerProgress(lab.id, lab.name, d, p, f, remaining_for(s, lab.id, project) + p))
    return out


@dataclass(frozen=True)
class JudgementRow:
    item_id: int
    external_id: str
    labeler: str
    kind: str
    n: int
    ranking: tuple[tuple[int, ...], ...] | None
    thumbs: tuple[int, ...] | None
    flag_reason: str | None


def project_judgements(s: Session, project: Project) -> list[JudgementRow]:
    """Every judgement in the project, in a stable order (item, labeler)."""
    n_comp = (
        select(Completion.item_id, func.count().label("n")).group_by(Completion.item_id).subquery()
    )
    rows = s.execute(
        select(Item.id, Item.external_id, Labeler.name, Judgement.kind, n_comp.c.n,
               Judgement.ranking, Judgement.thumbs, Judgement.flag_reason)
        .select_from(Judgement).join(Assignment, Judgement.assignment_id == Assignment.id)
        .join(Item, Assignment.item_id == Item.id).join(Labeler, Assignment.labeler_id == Labeler.id)
        .join(n_comp, n_comp.c.item_id == Item.id)
        .where(Assignment.project_id == project.id).order_by(Item.id, Labeler.name)
    )
    return [
        JudgementRow(iid, ext, name, kind, n, tuple(tuple(t) for t in rk) if rk else None,
                     tuple(th) if th else None, reason)
        for iid, ext, name, kind, n, rk, th, reason in rows
    ]


def items_with_completions(s: Session, item_ids: Iterable[int]) -> dict[int, Item]:
    ids = list(item_ids)
    rows = s.scalars(select(Item).where(Item.id.in_(ids)).options(selectinload(Item.completions))) if ids else []
    return {it.id: it for it in rows}


def count_rows(s: Session) -> dict[str, int]:
    """Row counts per table (for tests and the admin overview)."""
    tables = {"projects": Project, "items": Item, "completions": Completion, "labelers": Labeler,
              "assignments": Assignment, "judgements": Judgement, "exclusions": Exclusion}
    return {name: s.scalar(select(func.count()).select_from(t)) or 0 for name, t in tables.items()}


def done_assignments_without_judgement(s: Session) -> int:
    """Consistency check: assignments marked done that have no judgement (must be 0)."""
    return s.scalar(
        select(func.count()).select_from(Assignment).where(
            Assignment.status == "done", ~exists().where(and_(Judgement.assignment_id == Assignment.id))
        )
    ) or 0



# --------------------------------------------------------------------------- seeded balanced pre-assignment
# (alignment slice) Concurrent labelers claim items in whatever order their requests arrive, so which k
# labelers see an item depends on timing. Pre-assigning fixes that: every item gets its k labelers up front,
# as pending assignments, which `next_assignment` serves first; the result no longer depends on timing.


def preassign_balanced(s: Session, project: Project, labelers: Sequence[Labeler], seed: int) -> int:
    """Assign every item with free slots to labelers, balanced and seeded; returns the assignments created.

    Items in id order; each gets the k - n_assigned labelers with the fewest assignments so far that have
    not seen it, ties broken by a per-item seeded shuffle. Same items, labelers and seed -> same design.
    """
    import random

    k = project.labelers_per_item
    names = sorted(lab.name for lab in labelers)
    by_name = {lab.name: lab for lab in labelers}
    if k > len(names):
        raise ValueError(f"labelers_per_item={k} but only {len(names)} labelers to pre-assign")
    name_of = {lab.id: lab.name for lab in labelers}
    load = dict.fromkeys(names, 0)
    for lid, n in s.execute(
        select(Assignment.labeler_id, func.count()).where(Assignment.project_id == project.id).group_by(Assignment.labeler_id)
    ):
        if lid in name_of:
            load[name_of[lid]] = n
    seen: dict[int, set[int]] = {}
    for item_id, lid in s.execute(select(Assignment.item_id, Assignment.labeler_id).where(Assignment.project_id == project.id)):
        seen.setdefault(item_id, set()).add(lid)
    created = 0
    items = s.execute(
        select(Item.id, Item.external_id, Item.n_assigned).where(Item.project_id == project.id, Item.n_assigned < k)
        .order_by(Item.id)
    ).all()
    for item_id, external_id, n_assigned in items:
        order = names[:]
        random.Random(f"{seed}:{external_id}").shuffle(order)
        free = [n for n in order if by_name[n].id not in seen.get(item_id, set())]
        chosen = sorted(free, key=lambda n: load[n])[: k - n_assigned]  # stable sort keeps the shuffled order on ties
        for name in chosen:
            s.add(Assignment(project_id=project.id, item_id=item_id, labeler_id=by_name[name].id))
            load[name] += 1
        s.execute(update(Item).where(Item.id == item_id).values(n_assigned=Item.n_assigned + len(chosen)))
        created += len(chosen)
    s.flush()
    return created
