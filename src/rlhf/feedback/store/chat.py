"""Chat turns and personalisation on the labeling tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from rlhf.feedback.rankings import InvalidJudgement
from rlhf.feedback.store.labeling import (
    JudgementInput,
    NotFound,
    create_project,
    submit_judgement,
)
from rlhf.feedback.tables import (
    Assignment,
    ChatConversation,
    ChatProject,
    ChatTurn,
    Completion,
    Item,
    Judgement,
    Labeler,
    PersonalAdapter,
    Project,
    utcnow,
)

# =========================================================================== chat and personalisation
# Chat turns reuse the labeling machinery: a turn is an item (message + candidate replies) in a hidden chat
# project, assigned to its author alone (n_assigned = k = 1, so no one else can ever claim it), and a choice is
# a judgement of that assignment, written by `submit_judgement` with its validation and exactly-once rules.


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
