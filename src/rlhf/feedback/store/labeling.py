"""Projects, items, labelers and the labeling loop (claim, view, submit)."""


from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Iterable, Sequence

from sqlalchemy import bindparam, exists, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rlhf.feedback.rankings import InvalidJudgement, normalize_ranking, normalize_thumbs
from rlhf.feedback.tables import (
    MODES,
    Assignment,
    ChatProject,
    Completion,
    Exclusion,
    Item,
    Judgement,
    Labeler,
    Project,
    utcnow,
)
from rlhf.types import Generation


class NotFound(LookupError):
    """No such object, or it belongs to someone else (we do not say which)."""


class Conflict(ValueError):
    """The request clashes with stored state (e.g. a different judgement already recorded)."""


# --------------------------------------------------------------------------- projects and items


def create_project(
    s: Session, name: str, criterion: str, instructions: str = "", mode: str = "rank", labelers_per_item: int = 3
) -> Project:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if labelers_per_item < 1:
        raise ValueError("labelers_per_item must be >= 1")
    if s.scalar(select(Project.id).where(Project.name == name)) is not None:
        raise Conflict(f"project {name!r} already exists")
    p = Project(
        name=name, criterion=criterion, instructions=instructions, mode=mode, labelers_per_item=labelers_per_item
    )
    s.add(p)
    s.flush()
    return p


_PROJECT_BY_ID = select(Project).where(Project.id == bindparam("ref"))
_PROJECT_BY_NAME = select(Project).where(Project.name == bindparam("ref"))


def get_project(s: Session, ref: int | str) -> Project:
    """A project by id or name."""
    p = s.scalar(_PROJECT_BY_ID if isinstance(ref, int) else _PROJECT_BY_NAME, {"ref": ref})
    if p is None:
        raise NotFound(f"no project {ref!r}")
    return p


def list_projects(s: Session) -> list[Project]:
    """Labeling projects (the chat projects, which hold users' own chat turns, are left out)."""
    chat = select(ChatProject.project_id)
    return list(s.scalars(select(Project).where(Project.id.not_in(chat)).order_by(Project.id)))


def add_items(s: Session, project: Project, generations: Iterable[Generation]) -> tuple[int, int]:
    """Add generations as items; ids already in the project are skipped. Returns (added, skipped)."""
    known = set(s.scalars(select(Item.external_id).where(Item.project_id == project.id)))
    added = skipped = 0
    for g in generations:
        if g.id in known:
            skipped += 1
            continue
        known.add(g.id)
        item = Item(project_id=project.id, external_id=g.id, prompt=g.prompt, meta=dict(g.metadata))
        item.completions = [Completion(position=i, text=t) for i, t in enumerate(g.completions)]
        s.add(item)
        added += 1
    s.flush()
    return added, skipped


# --------------------------------------------------------------------------- labelers


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_labeler(s: Session, name: str) -> tuple[Labeler, str]:
    """A new labeler and its login token (returned once; only its hash is stored)."""
    name = name.strip()
    if not name:
        raise ValueError("labeler name must not be empty")
    if s.scalar(select(Labeler.id).where(Labeler.name == name)) is not None:
        raise Conflict(f"labeler {name!r} already exists")
    token = "rlhf_" + secrets.token_urlsafe(24)
    lab = Labeler(name=name, token_hash=hash_token(token))
    s.add(lab)
    s.flush()
    return lab, token


_LABELER_BY_HASH = select(Labeler).where(Labeler.token_hash == bindparam("h"), Labeler.active.is_(True))


def labeler_by_token(s: Session, token: str) -> Labeler | None:
    return s.scalar(_LABELER_BY_HASH, {"h": hash_token(token)})


def get_labeler(s: Session, ref: int | str) -> Labeler:
    cond = Labeler.id == ref if isinstance(ref, int) else Labeler.name == ref
    lab = s.scalar(select(Labeler).where(cond))
    if lab is None:
        raise NotFound(f"no labeler {ref!r}")
    return lab


def list_labelers(s: Session) -> list[Labeler]:
    return list(s.scalars(select(Labeler).order_by(Labeler.id)))


def set_excluded(s: Session, project: Project, labeler: Labeler, excluded: bool, reason: str = "") -> None:
    row = s.get(Exclusion, (project.id, labeler.id))
    if excluded and row is None:
        s.add(Exclusion(project_id=project.id, labeler_id=labeler.id, reason=reason))
    elif not excluded and row is not None:
        s.delete(row)
    s.flush()


def excluded_labelers(s: Session, project: Project) -> dict[str, str]:
    """Excluded labelers' names -> reason."""
    rows = s.execute(
        select(Labeler.name, Exclusion.reason).join(Exclusion, Exclusion.labeler_id == Labeler.id)
        .where(Exclusion.project_id == project.id)
    )
    return {name: reason for name, reason in rows}



# --------------------------------------------------------------------------- assignments


# The labeling loop (next, submit) runs per request: its statements are built once and run on the session's
# connection (rows, not ORM objects), since building statements and objects costs more CPU than SQLite's work.
_PROJECT_K = select(Project.labelers_per_item).where(Project.id == bindparam("project"))
_OWN = (Assignment.labeler_id == bindparam("labeler"), Assignment.project_id == bindparam("project"))
_PENDING = select(Assignment.id).where(*_OWN, Assignment.status == "pending").order_by(Assignment.id).limit(1)
_NOT_MINE = ~exists().where(Assignment.item_id == Item.id, Assignment.labeler_id == bindparam("labeler"))
_OPEN = (Item.project_id == bindparam("project"), Item.n_assigned < bindparam("k"), _NOT_MINE)
# One level of n_assigned at a time: (project_id, n_assigned) is indexed, so this reads items in id order and
# stops after 16, where "n_assigned < k ORDER BY n_assigned DESC, id" would sort every open item of the project.
_CANDIDATES = select(Item.id).where(
    Item.project_id == bindparam("project"), Item.n_assigned == bindparam("n"), _NOT_MINE).order_by(Item.id).limit(16)
_ANY_LEFT = select(Item.id).where(*_OPEN).limit(1)
_CLAIM = update(Item).where(Item.id == bindparam("item"), Item.n_assigned < bindparam("k")).values(
    n_assigned=Item.n_assigned + 1)
_ASSIGN = insert(Assignment).returning(Assignment.id)


def _try_claim(s: Session, item_id: int, k: int, keys: dict) -> int | None:
    c = s.connection()
    if c.execute(_CLAIM, {"item": item_id, "k": k}).rowcount != 1:
        return None
    return c.execute(_ASSIGN, {
        "project_id": keys["project"], "item_id": item_id, "labeler_id": keys["labeler"],
        "status": "pending", "created_at": utcnow(),
    }).scalar_one()


def claim_next(s: Session, labeler_id: int, project_id: int) -> int | None:
    """Id of the labeler's open assignment in the project, else of a newly claimed one, else None (nothing left).

    Items that already have more labelers come first, so items complete early. A slot is claimed with a
    conditional UPDATE (n_assigned < k), so concurrent claims never exceed k; the unique (item, labeler)
    constraint makes a second assignment of the same item to the same labeler impossible.
    """
    c = s.connection()
    k = c.execute(_PROJECT_K, {"project": project_id}).scalar()
    if k is None:
        raise NotFound(f"no project {project_id!r}")
    keys = {"labeler": labeler_id, "project": project_id}
    pending = c.execute(_PENDING, keys).scalar()
    if pending is not None:
        return pending
    # SQLite runs one write transaction at a time, so nothing can change under this one. PostgreSQL runs
    # them side by side: a claim can lose a race (retry), and a savepoint undoes a lost one's UPDATE.
    serial = c.dialect.name == "sqlite"
    while True:
        for level in range(k - 1, -1, -1):
            for item_id in c.execute(_CANDIDATES, keys | {"n": level}).scalars().all():
                if serial:
                    claimed = _try_claim(s, item_id, k, keys)
                else:
                    try:
                        with s.begin_nested():
                            claimed = _try_claim(s, item_id, k, keys)
                    except IntegrityError:  # this labeler claimed the item in a concurrent request
                        claimed = None
                if claimed is not None:
                    return claimed
        if serial or c.execute(_ANY_LEFT, keys | {"k": k}).first() is None:
            return None


def next_assignment(s: Session, labeler: Labeler, project: Project) -> Assignment | None:
    """`claim_next` as an ORM Assignment (with its item and completions a lazy load away)."""
    return s.get(Assignment, aid) if (aid := claim_next(s, labeler.id, project.id)) is not None else None


@dataclass(frozen=True)
class ItemView:
    external_id: str
    prompt: str
    completions: tuple
    """Rows with .id, .position and .text, in position order."""


@dataclass(frozen=True)
class AssignmentView:
    """An assignment as its labeler sees it, read in one query (what the labeling page and API show)."""
    id: int
    project_id: int
    status: str
    item: ItemView


_VIEW = (
    select(Assignment.project_id, Assignment.labeler_id, Assignment.status, Item.external_id, Item.prompt,
           Completion.id, Completion.position, Completion.text)
    .join(Item, Assignment.item_id == Item.id).join(Completion, Completion.item_id == Item.id)
    .where(Assignment.id == bindparam("assignment")).order_by(Completion.position)
)


def assignment_view(s: Session, labeler_id: int, assignment_id: int) -> AssignmentView:
    """The labeler's own assignment with its item and completions; another's raises NotFound."""
    rows = s.connection().execute(_VIEW, {"assignment": assignment_id}).all()
    if not rows or rows[0].labeler_id != labeler_id:
        raise NotFound(f"no assignment {assignment_id} for this labeler")
    return AssignmentView(assignment_id, rows[0].project_id, rows[0].status,
                          ItemView(rows[0].external_id, rows[0].prompt, tuple(rows)))


@dataclass(frozen=True)
class JudgementInput:
    """A submission: exactly one of ranking (completion ids, tiers best first), thumbs or flag_reason."""

    ranking: Sequence[int | Sequence[int]] | None = None
    thumbs: dict[int, int] | None = None
    flag_reason: str | None = None
    seconds: float | None = None
    confidence: float | None = None
    """AI labelers: how sure the model is of this judgement (see tables.Judgement.confidence)."""
    details: dict | None = None
    """AI labelers: the evidence behind the judgement, shown on the admin audit page."""


def _validate(mode: str, ids: list[int], j: JudgementInput) -> dict:
    """The judgement's stored fields, checked against the project's mode and the item's completion ids."""
    given = [name for name in ("ranking", "thumbs", "flag_reason") if getattr(j, name) is not None]
    if len(given) != 1:
        raise InvalidJudgement(f"send exactly one of ranking, thumbs or flag_reason (got {given or 'none'})")
    if j.flag_reason is not None:
        reason = j.flag_reason.strip()
        if not reason:
            raise InvalidJudgement("flagging an item needs a reason")
        return {"kind": "flag", "flag_reason": reason}
    if j.ranking is not None:
        if mode != "rank":
            raise InvalidJudgement("this project collects thumbs up/down, not rankings")
        return {"kind": "rank", "ranking": [list(t) for t in normalize_ranking(j.ranking, ids)]}
    if mode != "thumbs":
        raise InvalidJudgement("this project collects rankings, not thumbs up/down")
    return {"kind": "thumbs", "thumbs": list(normalize_thumbs(j.thumbs or {}, ids))}


_LOCK_ASSIGNMENT = (  # the row as locked now, even if this session holds an older copy
    select(Assignment).where(Assignment.id == bindparam("assignment")).with_for_update()
    .execution_options(populate_existing=True)
)
_JUDGED_ITEM = (
    select(Project.mode, Completion.id).join(Item, Item.project_id == Project.id)
    .join(Completion, Completion.item_id == Item.id).where(Item.id == bindparam("item")).order_by(Completion.position)
)
_OLD_JUDGEMENT = select(Judgement).where(Judgement.assignment_id == bindparam("assignment"))


def submit_judgement(s: Session, labeler: Labeler, assignment_id: int, j: JudgementInput) -> tuple[Judgement, bool]:
    """Record a judgement for the labeler's own assignment. Returns (judgement, created).

    Resending the same judgement (a retry) returns the stored one with created=False; a different
    judgement for a finished assignment raises Conflict. Invalid input raises InvalidJudgement.
    """
    a = s.scalar(_LOCK_ASSIGNMENT, {"assignment": assignment_id})
    if a is None or a.labeler_id != labeler.id:
        raise NotFound(f"no assignment {assignment_id} for this labeler")
    item = s.connection().execute(_JUDGED_ITEM, {"item": a.item_id}).all()
    fields = _validate(item[0].mode, [row.id for row in item], j)
    old = s.scalar(_OLD_JUDGEMENT, {"assignment": a.id}) if a.status == "done" else None  # done <=> judged
    if old is not None:
        if all(getattr(old, key) == value for key, value in fields.items()):
            return old, False
        raise Conflict(f"assignment {assignment_id} already has a different judgement")
    judgement = Judgement(assignment_id=a.id, seconds=j.seconds, confidence=j.confidence, details=j.details, **fields)
    s.add(judgement)
    a.status = "done"
    a.completed_at = utcnow()
    s.flush()
    return judgement, True
