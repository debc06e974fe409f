"""Repository functions: the only module that queries the feedback store. Each takes a Session;
the caller owns the transaction (one submission = one `Database.session()` block).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Iterable, Sequence

from sqlalchemy import and_, case, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from rlhf.feedback.rankings import InvalidJudgement, normalize_ranking, normalize_thumbs
from rlhf.feedback.tables import MODES, Assignment, Completion, Exclusion, Item, Judgement, Labeler, Project, utcnow
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


def get_project(s: Session, ref: int | str) -> Project:
    """A project by id or name."""
    cond = Project.id == ref if isinstance(ref, int) else Project.name == ref
    p = s.scalar(select(Project).where(cond))
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


def labeler_by_token(s: Session, token: str) -> Labeler | None:
    return s.scalar(select(Labeler).where(Labeler.token_hash == hash_token(token), Labeler.active.is_(True)))


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


def next_assignment(s: Session, labeler: Labeler, project: Project) -> Assignment | None:
    """The labeler's open assignment in `project`, else a newly claimed one, else None (nothing left).

    Items that already have some labelers come first, so items complete early. A slot is claimed with a
    conditional UPDATE (n_assigned < k), so concurrent claims never exceed k; the unique (item, labeler)
    constraint makes a second assignment of the same item to the same labeler impossible.
    """
    pending = s.scalar(
        select(Assignment).where(
            Assignment.labeler_id == labeler.id, Assignment.project_id == project.id, Assignment.status == "pending"
        ).order_by(Assignment.id).limit(1)
    )
    if pending is not None:
        return pending
    k = project.labelers_per_item
    mine = exists().where(Assignment.item_id == Item.id, Assignment.labeler_id == labeler.id)
    while True:
        candidates = s.scalars(
            select(Item.id).where(Item.project_id == project.id, Item.n_assigned < k, ~mine)
            .order_by(Item.n_assigned.desc(), Item.id).limit(16)
        ).all()
        if not candidates:
            return None
        for item_id in candidates:
            try:
                with s.begin_nested():
                    claimed = s.execute(
                        update(Item).where(Item.id == item_id, Item.n_assigned < k)
                        .values(n_assigned=Item.n_assigned + 1)
                    ).rowcount
                    if claimed != 1:
                        continue
                    a = Assignment(project_id=project.id, item_id=item_id, labeler_id=labeler.id)
                    s.add(a)
            except IntegrityError:  # this labeler claimed the item in a concurrent request
                continue
            return a


def get_assignment(s: Session, labeler: Labeler, assignment_id: int) -> Assignment:
    """The labeler's own assignment with its item and completions; another's raises NotFound."""
    a = s.scalar(
        select(Assignment).where(Assignment.id == assignment_id)
        .options(selectinload(Assignment.item).selectinload(Item.completions))
    )
    if a is None or a.labeler_id != labeler.id:
        raise NotFound(f"no assignment {assignment_id} for this labeler")
    return a


@dataclass(frozen=True)
class JudgementInput:
    """A submission: exactly one of ranking (completion ids, tiers best first), thumbs or flag_reason."""

    ranking: Sequence[int | Sequence[int]] | None = None
    thumbs: dict[int, int] | None = None
    flag_reason: str | None = None
    seconds: float | None = None


def _validate(project: Project, item: Item, j: JudgementInput) -> dict:
    ids = [c.id for c in item.completions]
    given = [name for name in ("ranking", "thumbs", "flag_reason") if getattr(j, name) is not None]
    if len(given) != 1:
        raise InvalidJudgement(f"send exactly one of ranking, thumbs or flag_reason (got {given or 'none'})")
    if j.flag_reason is not None:
        reason = j.flag_reason.strip()
        if not reason:
            raise InvalidJudgement("flagging an item needs a reason")
        return {"kind": "flag", "flag_reason": reason}
    if j.ranking is not None:
        if project.mode != "rank":
            raise InvalidJudgement("this project collects thumbs up/down, not rankings")
        return {"kind": "rank", "ranking": [list(t) for t in normalize_ranking(j.ranking, ids)]}
    if project.mode != "thumbs":
        raise InvalidJudgement("this project collects rankings, not thumbs up/down")
    return {"kind": "thumbs", "thumbs": list(normalize_thumbs(j.thumbs or {}, ids))}


def submit_judgement(s: Session, labeler: Labeler, assignment_id: int, j: JudgementInput) -> tuple[Judgement, bool]:
    """Record a judgement for the labeler's own assignment. Returns (judgement, created).

    Resending the same judgement (a retry) returns the stored one with created=False; a different
    judgement for a finished assignment raises Conflict. Invalid input raises InvalidJudgement.
    """
    a = s.scalar(
        select(Assignment).where(Assignment.id == assignment_id).with_for_update()
        .options(selectinload(Assignment.item).selectinload(Item.completions))
    )
    if a is None or a.labeler_id != labeler.id:
        raise NotFound(f"no assignment {assignment_id} for this labeler")
    project = s.get(Project, a.project_id)
    fields = _validate(project, a.item, j)
    old = s.scalar(select(Judgement).where(Judgement.assignment_id == a.id))
    if old is not None:
        if all(getattr(old, key) == value for key, value in fields.items()):
            return old, False
        raise Conflict(f"assignment {assignment_id} already has a different judgement")
    judgement = Judgement(assignment_id=a.id, seconds=j.seconds, **fields)
    s.add(judgement)
    a.status = "done"
    a.completed_at = utcnow()
    s.flush()
    return judgement, True


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
    done = (
        select(Assignment.item_id, func.count().label("n")).where(
            Assignment.project_id == project.id, Assignment.status == "done"
        ).group_by(Assignment.item_id).subquery()
    )
    judgements = s.scalar(select(func.coalesce(func.sum(done.c.n), 0))) or 0
    complete = s.scalar(select(func.count()).select_from(done).where(done.c.n >= project.labelers_per_item)) or 0
    flagged = s.scalar(
        select(func.count()).select_from(Judgement).join(Assignment)
        .where(Assignment.project_id == project.id, Judgement.kind == "flag")
    ) or 0
    return ProjectProgress(items, items * project.labelers_per_item, judgements, complete, flagged)


def remaining_for(s: Session, labeler_id: int, project: Project) -> int:
    mine = exists().where(Assignment.item_id == Item.id, Assignment.labeler_id == labeler_id)
    return s.scalar(
        select(func.count()).select_from(Item)
        .where(Item.project_id == project.id, Item.n_assigned < project.labelers_per_item, ~mine)
    ) or 0


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


# =========================================================================== chat and personalisation
# Chat turns reuse the labeling machinery: a turn is an item (message + candidate replies) in a hidden chat
# project, assigned to its author alone (n_assigned = k = 1, so no one else can ever claim it), and a choice is
# a judgement of that assignment, written by `submit_judgement` with its validation and exactly-once rules.

from sqlalchemy import delete  # noqa: E402

from rlhf.feedback.tables import ChatConversation, ChatProject, ChatTurn, PersonalAdapter  # noqa: E402

CHAT_PROJECTS = {
    "ab": ("chat: two replies", "rank", "The reply you prefer, in your own taste."),
    "single": ("chat: one reply", "thumbs", "Whether you liked the reply, in your own taste."),
}
CHOICES = ("A", "B", "tie")


def chat_project(s: Session, kind: str) -> Project:
    """The chat project of `kind` ('ab': two replies, rank mode; 'single': one reply, thumbs mode), made on first use."""
    if kind not in CHAT_PROJECTS:
        raise ValueError(f"chat kind must be one of {sorted(CHAT_PROJECTS)}, not {kind!r}")
    row = s.get(ChatProject, kind)
    if row is not None:
        return s.get(Project, row.project_id)
    name, mode, criterion = CHAT_PROJECTS[kind]
    try:
        with s.begin_nested():
            p = create_project(s, name, criterion, mode=mode, labelers_per_item=1)
            s.add(ChatProject(kind=kind, project_id=p.id))
    except IntegrityError:  # created by a concurrent request
        return s.get(Project, s.get(ChatProject, kind).project_id)
    return p


def chat_project_ids(s: Session) -> dict[str, int]:
    return {row.kind: row.project_id for row in s.scalars(select(ChatProject))}


def create_conversation(s: Session, labeler: Labeler, title: str = "") -> ChatConversation:
    conv = ChatConversation(labeler_id=labeler.id, title=title.strip()[:200])
    s.add(conv)
    s.flush()
    return conv


def get_conversation(s: Session, labeler: Labeler, conversation_id: int) -> ChatConversation:
    """The labeler's own conversation; another's raises NotFound (we do not say it exists)."""
    conv = s.get(ChatConversation, conversation_id)
    if conv is None or conv.labeler_id != labeler.id:
        raise NotFound(f"no conversation {conversation_id} for this user")
    return conv


def list_conversations(s: Session, labeler: Labeler) -> list[tuple[ChatConversation, int]]:
    """The labeler's conversations, newest first, with their number of turns."""
    n = select(func.count()).where(ChatTurn.conversation_id == ChatConversation.id).scalar_subquery()
    rows = s.execute(
        select(ChatConversation, n).where(ChatConversation.labeler_id == labeler.id).order_by(ChatConversation.id.desc())
    )
    return [(conv, int(count)) for conv, count in rows]


def _turn_query():
    return select(ChatTurn).options(
        selectinload(ChatTurn.item).selectinload(Item.completions),
        selectinload(ChatTurn.assignment).selectinload(Assignment.judgement),
    )


def conversation_turns(s: Session, conv: ChatConversation) -> list[ChatTurn]:
    return list(s.scalars(_turn_query().where(ChatTurn.conversation_id == conv.id).order_by(ChatTurn.position)))


def get_turn(s: Session, labeler: Labeler, turn_id: int) -> ChatTurn:
    turn = s.scalar(_turn_query().where(ChatTurn.id == turn_id))
    if turn is None or turn.labeler_id != labeler.id:
        raise NotFound(f"no chat turn {turn_id} for this user")
    return turn


def turn_by_request(s: Session, labeler: Labeler, request_id: str) -> ChatTurn | None:
    return s.scalar(_turn_query().where(ChatTurn.labeler_id == labeler.id, ChatTurn.request_id == request_id))


def reply_text(turn: ChatTurn) -> str:
    """The reply the conversation continues from: the chosen candidate, else the first."""
    comps = turn.item.completions
    chosen = [c for c in comps if c.id == turn.reply_completion_id]
    return (chosen or comps)[0].text


def conversation_messages(turns: Sequence[ChatTurn]) -> list[dict[str, str]]:
    """The conversation so far as chat messages (user message, then the reply it continued from)."""
    out: list[dict[str, str]] = []
    for t in turns:
        out += [{"role": "user", "content": t.item.prompt}, {"role": "assistant", "content": reply_text(t)}]
    return out


def add_chat_turn(
    s: Session, labeler: Labeler, conv: ChatConversation, message: str, candidates: Sequence[str],
    policy: str, adapter_version: int | None = None, request_id: str | None = None,
    context: Sequence[dict[str, str]] = (),
) -> ChatTurn:
    """Store a message and its 1 or 2 candidate replies as an item of a chat project, assigned to the author."""
    if conv.labeler_id != labeler.id:
        raise NotFound(f"no conversation {conv.id} for this user")
    if len(candidates) not in (1, 2):
        raise ValueError(f"a chat turn has 1 or 2 candidate replies, not {len(candidates)}")
    project = chat_project(s, "ab" if len(candidates) == 2 else "single")
    position = s.scalar(select(func.count()).where(ChatTurn.conversation_id == conv.id)) or 0
    item = Item(
        project_id=project.id, external_id=f"chat-{conv.id}-{position}", prompt=message, n_assigned=1,
        meta={"conversation_id": conv.id, "position": position, "context": list(context), "policy": policy},
    )
    item.completions = [Completion(position=i, text=t) for i, t in enumerate(candidates)]
    s.add(item)
    s.flush()
    assignment = Assignment(project_id=project.id, item_id=item.id, labeler_id=labeler.id)
    s.add(assignment)
    s.flush()
    turn = ChatTurn(
        conversation_id=conv.id, labeler_id=labeler.id, position=position, item_id=item.id,
        assignment_id=assignment.id, request_id=request_id, policy=policy, adapter_version=adapter_version,
    )
    s.add(turn)
    s.flush()
    return s.scalar(_turn_query().where(ChatTurn.id == turn.id).execution_options(populate_existing=True))


def submit_chat_feedback(
    s: Session, labeler: Labeler, turn_id: int, choice: str | None = None, thumbs: int | None = None,
    seconds: float | None = None,
) -> tuple[Judgement, bool]:
    """A choice between two replies ('A', 'B' or 'tie') or thumbs (+1/-1) on a single reply, as a judgement.

    Goes through `submit_judgement`: same validation, a retry returns the stored judgement (created=False),
    a different one raises Conflict. The chosen reply becomes the one the conversation continues from.
    """
    turn = get_turn(s, labeler, turn_id)
    ids = [c.id for c in turn.item.completions]
    if (choice is None) == (thumbs is None):
        raise InvalidJudgement("send exactly one of choice (A, B or tie) or thumbs (up or down)")
    if len(ids) == 2:
        if choice is None:
            raise InvalidJudgement("this turn compares two replies: send choice A, B or tie, not thumbs")
        if choice not in CHOICES:
            raise InvalidJudgement(f"choice must be one of {list(CHOICES)}, not {choice!r}")
        ranking = [ids] if choice == "tie" else [[ids[0]], [ids[1]]] if choice == "A" else [[ids[1]], [ids[0]]]
        j = JudgementInput(ranking=ranking, seconds=seconds)
        reply = ids[1] if choice == "B" else ids[0]
    else:
        if thumbs is None:
            raise InvalidJudgement("this turn has one reply: send thumbs up or down, not a choice")
        j = JudgementInput(thumbs={ids[0]: thumbs}, seconds=seconds)
        reply = ids[0]
    judgement, created = submit_judgement(s, labeler, turn.assignment_id, j)
    turn.reply_completion_id = reply
    s.flush()
    return judgement, created


def turn_feedback(turn: ChatTurn) -> dict | None:
    """The stored choice of a turn as the API shows it: {'choice': 'A'|'B'|'tie'} or {'thumbs': 'up'|'down'}."""
    j = turn.assignment.judgement
    if j is None or j.kind == "flag":
        return None
    if j.kind == "thumbs":
        return {"thumbs": "up" if j.thumbs[0] > 0 else "down"}
    tiers = j.ranking
    return {"choice": "tie" if len(tiers) == 1 else "A" if tiers[0] == [0] else "B"}


@dataclass(frozen=True)
class ChatFeedback:
    """One user's judgement of one chat turn, as personalisation reads it."""

    judgement_id: int
    labeler_id: int
    labeler: str
    turn_id: int
    prompt: str
    context: tuple[tuple[str, str], ...]
    """Earlier messages of the conversation: (role, content)."""
    completions: tuple[str, ...]
    kind: str
    """'rank' (A/B choice) or 'thumbs'."""
    ranking: tuple[tuple[int, ...], ...] | None
    thumbs: tuple[int, ...] | None


def chat_feedback(s: Session, labeler_ids: Iterable[int] | None = None) -> list[ChatFeedback]:
    """Every chat judgement (flags left out), oldest first, optionally of some users only."""
    query = (
        select(ChatTurn, Judgement, Labeler.name).join(Assignment, ChatTurn.assignment_id == Assignment.id)
        .join(Judgement, Judgement.assignment_id == Assignment.id).join(Labeler, ChatTurn.labeler_id == Labeler.id)
        .where(Judgement.kind != "flag").options(selectinload(ChatTurn.item).selectinload(Item.completions))
        .order_by(Judgement.id)
    )
    if labeler_ids is not None:
        query = query.where(ChatTurn.labeler_id.in_(list(labeler_ids)))
    out = []
    for turn, j, name in s.execute(query):
        ctx = tuple((m["role"], m["content"]) for m in (turn.item.meta or {}).get("context", []))
        out.append(ChatFeedback(
            j.id, turn.labeler_id, name, turn.id, turn.item.prompt, ctx, tuple(c.text for c in turn.item.completions),
            j.kind, tuple(tuple(t) for t in j.ranking) if j.ranking else None, tuple(j.thumbs) if j.thumbs else None,
        ))
    return out


def chat_choice_count(s: Session, labeler_id: int) -> int:
    """The user's stored chat choices (A/B and thumbs; flags left out)."""
    return s.scalar(
        select(func.count()).select_from(ChatTurn).join(Judgement, Judgement.assignment_id == ChatTurn.assignment_id)
        .where(ChatTurn.labeler_id == labeler_id, Judgement.kind != "flag")
    ) or 0


def personal_adapter(s: Session, labeler_id: int) -> PersonalAdapter | None:
    return s.get(PersonalAdapter, labeler_id)


def personal_adapters(s: Session) -> dict[int, PersonalAdapter]:
    return {a.labeler_id: a for a in s.scalars(select(PersonalAdapter))}


def publish_adapter(
    s: Session, labeler_id: int, version: int, path: str, shared: str, last_judgement_id: int, pairs: int
) -> PersonalAdapter:
    """Make `path` the user's adapter. Raises NotFound if the user was deleted meanwhile (nothing is written)."""
    if s.get(Labeler, labeler_id) is None:
        raise NotFound(f"no user {labeler_id}")
    row = s.get(PersonalAdapter, labeler_id) or PersonalAdapter(labeler_id=labeler_id)
    row.version, row.path, row.shared = version, path, shared
    row.last_judgement_id, row.pairs, row.updated_at = last_judgement_id, pairs, utcnow()
    s.add(row)
    s.flush()
    return row


def _iso(t) -> str | None:  # noqa: ANN001
    return t.isoformat() if t is not None else None


def export_user(s: Session, labeler: Labeler) -> dict:
    """Everything the store holds about a user: account, conversations with choices, labeling judgements, adapter."""
    conversations = []
    for conv, _ in reversed(list_conversations(s, labeler)):
        turns = [{
            "id": t.id, "position": t.position, "message": t.item.prompt, "policy": t.policy,
            "adapter_version": t.adapter_version, "created_at": _iso(t.created_at),
            "candidates": [{"label": "AB"[i] if i < 2 else str(i), "text": c.text} for i, c in enumerate(t.item.completions)],
            "feedback": turn_feedback(t),
        } for t in conversation_turns(s, conv)]
        conversations.append({"id": conv.id, "title": conv.title, "created_at": _iso(conv.created_at), "turns": turns})
    chat_items = select(ChatTurn.item_id).where(ChatTurn.labeler_id == labeler.id)
    rows = s.execute(
        select(Project.name, Item, Judgement).select_from(Judgement).join(Assignment).join(Item)
        .join(Project, Item.project_id == Project.id)
        .where(Assignment.labeler_id == labeler.id, Item.id.not_in(chat_items)).order_by(Judgement.id)
        .options(selectinload(Item.completions))
    )
    labeling = [{
        "project": name, "item": item.external_id, "prompt": item.prompt, "completions": [c.text for c in item.completions],
        "kind": j.kind, "ranking": j.ranking, "thumbs": j.thumbs, "flag_reason": j.flag_reason,
        "created_at": _iso(j.created_at),
    } for name, item, j in rows]
    a = personal_adapter(s, labeler.id)
    adapter = None if a is None else {
        "version": a.version, "path": a.path, "shared": a.shared, "last_judgement_id": a.last_judgement_id,
        "pairs": a.pairs, "updated_at": _iso(a.updated_at),
    }
    return {
        "user": {"id": labeler.id, "name": labeler.name, "active": labeler.active, "created_at": _iso(labeler.created_at)},
        "conversations": conversations, "labeling": labeling, "adapter": adapter,
    }


def delete_user(s: Session, labeler: Labeler) -> dict[str, int]:
    """Remove a user and all their feedback: chat turns (items), judgements, assignments, conversations, adapter row.

    Labeling slots they held on shared items are freed (n_assigned decremented), so others can take them.
    Returns what was removed, by kind.
    """
    lid = labeler.id
    chat_items = select(ChatTurn.item_id).where(ChatTurn.labeler_id == lid).scalar_subquery()
    count = lambda q: s.scalar(select(func.count()).select_from(q.subquery())) or 0  # noqa: E731
    removed = {
        "chat_turns": count(select(ChatTurn.id).where(ChatTurn.labeler_id == lid)),
        "conversations": count(select(ChatConversation.id).where(ChatConversation.labeler_id == lid)),
        "judgements": count(select(Judgement.id).join(Assignment).where(Assignment.labeler_id == lid)),
        "assignments": count(select(Assignment.id).where(Assignment.labeler_id == lid)),
        "adapters": count(select(PersonalAdapter.labeler_id).where(PersonalAdapter.labeler_id == lid)),
    }
    held = select(Assignment.item_id).where(Assignment.labeler_id == lid, Assignment.item_id.not_in(chat_items))
    s.execute(update(Item).where(Item.id.in_(held)).values(n_assigned=Item.n_assigned - 1))
    s.execute(delete(Item).where(Item.id.in_(chat_items)))  # cascades: completions, assignments, judgements, turns
    s.execute(delete(Labeler).where(Labeler.id == lid))  # cascades: the rest of their rows
    s.expunge_all()
    return removed
