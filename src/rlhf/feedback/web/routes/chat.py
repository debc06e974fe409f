"""Chat: a signed-in user talks to their policy and picks between replies; admins export or delete a user's data.

Every choice is a judgement in the feedback store (see the chat section of `store`). The reply route is async:
the database work runs in the thread pool in short transactions, and generation is awaited from the model's own
worker thread (`rlhf.personalize.serving.ChatService`), so a reply never holds a connection or the event loop.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from rlhf.feedback import store
from rlhf.feedback.tables import Labeler
from rlhf.feedback.web.chat_schemas import (
    ConversationDetail,
    ConversationIn,
    ConversationOut,
    DeletedOut,
    FeedbackIn,
    FeedbackOut,
    MeOut,
    TurnIn,
    TurnOut,
    UsageOut,
    turn_out,
)
from rlhf.feedback.web.deps import (
    LABELER_COOKIE,
    AdminOnly,
    CurrentLabeler,
    IdPath,
    NotAuthenticated,
    ReadSessionDep,
    SessionDep,
    _credential,
    labeler_bearer,
)
from rlhf.feedback.web.errors import responses
from rlhf.feedback.web.routes.label import render
from rlhf.personalize.data import user_key
from rlhf.personalize.layout import PersonalDir
from rlhf.personalize.serving import AdapterRef, ChatService, ReplyRequest, ServiceBusy, chat_config_from_env
from rlhf.personalize.users import delete_user_data, export_user_data

api_router = APIRouter(prefix="/api/chat", tags=["chat"])
admin_router = APIRouter(prefix="/api/admin/users", tags=["admin"])
page_router = APIRouter(include_in_schema=False)

R401, R404 = responses(401, 503), responses((404, "No such object among yours (another user's is reported the same way)."))
R409 = responses((409, "A different choice is already stored for this turn."))
R422 = responses(400, (422, "Invalid body (unknown field, blank message, choice that does not fit the turn, ...)."))
R503 = responses((503, "The model (or the store) is busy; retry after the Retry-After seconds."))
RETRY_TURN = {200: {"model": TurnOut, "description": "A retry: the turn stored earlier under this request_id."}}
RETRY_CHOICE = {200: {"model": FeedbackOut, "description": "A repeat of the stored choice (nothing new written)."}}
ADMIN = responses((401, "Missing or invalid admin token."), 422, 503) | R404

_init = threading.Lock()


def chat_service(request: Request) -> ChatService:
    """The app's chat service: set by whoever built the app, else made from RLHF_CHAT_CONFIG on first use."""
    svc = getattr(request.app.state, "chat", None)
    if svc is None:
        with _init:
            svc = getattr(request.app.state, "chat", None)
            if svc is None:
                svc = request.app.state.chat = ChatService(chat_config_from_env())
    return svc


@dataclass(frozen=True)
class ChatUser:
    id: int
    name: str


def chat_user(
    request: Request, bearer: Annotated[Optional[HTTPAuthorizationCredentials], Depends(labeler_bearer)]
) -> ChatUser:
    """The signed-in user, looked up in a snapshot of its own (the reply route must not hold one while it waits)."""
    token = _credential(request, bearer, LABELER_COOKIE)
    with request.app.state.db.read() as s:
        lab = store.labeler_by_token(s, token) if token else None
        if lab is None:
            raise NotAuthenticated()
        return ChatUser(lab.id, lab.name)


ChatUserDep = Annotated[ChatUser, Depends(chat_user)]
ChatDep = Annotated[Any, Depends(chat_service)]  # a ChatService (Any: FastAPI must not inspect it)


def _adapter_ref(s, labeler_id: int) -> AdapterRef | None:  # noqa: ANN001
    row = store.personal_adapter(s, labeler_id)
    return None if row is None else AdapterRef(user_key(labeler_id), row.version, row.path, row.shared)


# --------------------------------------------------------------------------- the user's API


@api_router.get("/me", responses=R401)
def me(labeler: CurrentLabeler, s: ReadSessionDep, chat: ChatDep) -> MeOut:
    """Who answers you (your adapter, the shared policy or the base) and how many choices you have made."""
    policy, ref = chat.policy_for(_adapter_ref(s, labeler.id))
    n = store.chat_choice_count(s, labeler.id)
    return MeOut(id=labeler.id, name=labeler.name, policy=policy, adapter_version=ref.version if ref else None,
                 max_new_tokens=chat.cfg.max_new_tokens, choices=n)


@api_router.post("/conversations", status_code=201, responses=R401 | R422)
def create_conversation(body: ConversationIn, labeler: CurrentLabeler, s: SessionDep) -> ConversationOut:
    conv = store.create_conversation(s, labeler, body.title)
    out = ConversationOut(id=conv.id, title=conv.title, created_at=conv.created_at, turns=0)
    s.commit()
    return out


@api_router.get("/conversations", responses=R401)
def list_conversations(labeler: CurrentLabeler, s: ReadSessionDep) -> list[ConversationOut]:
    """Your conversations, newest first."""
    return [ConversationOut(id=c.id, title=c.title, created_at=c.created_at, turns=n)
            for c, n in store.list_conversations(s, labeler)]


@api_router.get("/conversations/{conversation_id}", responses=R401 | R404 | responses(422))
def get_conversation(conversation_id: IdPath, labeler: CurrentLabeler, s: ReadSessionDep) -> ConversationDetail:
    conv = store.get_conversation(s, labeler, conversation_id)
    turns = store.conversation_turns(s, conv)
    return ConversationDetail(id=conv.id, title=conv.title, created_at=conv.created_at, turns=len(turns),
                              turn_list=[turn_out(t) for t in turns])


@dataclass
class _Prepared:
    existing: TurnOut | None = None
    context: list[dict[str, str]] | None = None
    adapter: AdapterRef | None = None


def _prepare(db, user: ChatUser, conversation_id: int, body: TurnIn) -> _Prepared:  # noqa: ANN001
    with db.session() as s:
        lab = s.get(Labeler, user.id)
        conv = store.get_conversation(s, lab, conversation_id)
        if body.request_id and (old := store.turn_by_request(s, lab, body.request_id)) is not None:
            if old.conversation_id != conv.id:
                raise store.Conflict(f"request_id {body.request_id!r} was used in another conversation")
            return _Prepared(existing=turn_out(old))
        context = store.conversation_messages(store.conversation_turns(s, conv))
        return _Prepared(context=context, adapter=_adapter_ref(s, user.id))


def _save_turn(db, user: ChatUser, conversation_id: int, body: TurnIn, texts, policy, ref, context, usage):  # noqa: ANN001
    with db.session() as s:
        lab = s.get(Labeler, user.id)
        if lab is None:
            raise store.NotFound("this user no longer exists")
        conv = store.get_conversation(s, lab, conversation_id)
        try:
            with s.begin_nested():
                turn = store.add_chat_turn(s, lab, conv, body.message, texts, policy,
                                           ref.version if ref else None, body.request_id, context)
        except IntegrityError:  # the same request_id, or another turn, was stored meanwhile
            old = store.turn_by_request(s, lab, body.request_id) if body.request_id else None
            if old is None:
                raise store.Conflict("another turn was added to this conversation at the same time; retry") from None
            return turn_out(old), False
        return turn_out(turn, usage), True


@api_router.post(
    "/conversations/{conversation_id}/turns", status_code=201, responses=RETRY_TURN | R401 | R404 | R409 | R422 | R503
)
async def add_turn(
    conversation_id: IdPath, body: TurnIn, user: ChatUserDep, chat: ChatDep, request: Request, response: Response
) -> TurnOut:
    """Send a message; get one reply, or two to compare (A/B). A retry with the same request_id answers 200."""
    db = request.app.state.db
    cap = chat.cfg.max_new_tokens
    if body.max_new_tokens is not None and body.max_new_tokens > cap:
        raise HTTPException(422, f"max_new_tokens: at most {cap} on this server")
    prep = await run_in_threadpool(_prepare, db, user, conversation_id, body)
    if prep.existing is not None:
        response.status_code = 200
        return prep.existing
    policy, ref = chat.policy_for(prep.adapter)
    messages = (*prep.context, {"role": "user", "content": body.message})
    try:
        reply = await chat.areply(ReplyRequest(messages, 2 if body.compare else 1, body.max_new_tokens or cap, ref))
    except ServiceBusy as e:
        raise HTTPException(503, f"the model is busy: {e}; retry shortly", headers={"Retry-After": "5"}) from None
    if reply.fallback:  # the adapter could not be loaded: the shared policy (or the base) answered instead
        policy, ref = chat.policy_for(None)
    usage = UsageOut(tokens=reply.tokens, queue_ms=1000 * reply.queue_s, generate_ms=1000 * reply.generate_s,
                     adapter_load_ms=1000 * reply.load_s)
    out, created = await run_in_threadpool(
        _save_turn, db, user, conversation_id, body, reply.texts, policy, ref, prep.context, usage)
    if not created:
        response.status_code = 200
    return out


@api_router.post("/turns/{turn_id}/feedback", status_code=201, responses=RETRY_CHOICE | R401 | R404 | R409 | R422)
def feedback(turn_id: IdPath, body: FeedbackIn, labeler: CurrentLabeler, s: SessionDep, response: Response) -> FeedbackOut:
    """Pick A, B or tie between two replies, or thumbs up/down on one. Stored once; a repeat answers 200."""
    thumbs = None if body.thumbs is None else (1 if body.thumbs == "up" else -1)
    j, created = store.submit_chat_feedback(s, labeler, turn_id, body.choice, thumbs, body.seconds)
    turn = store.get_turn(s, labeler, turn_id)
    out = FeedbackOut(judgement_id=j.id, turn_id=turn_id, feedback=store.turn_feedback(turn) or {}, duplicate=not created)
    s.commit()
    if not created:
        response.status_code = 200
    return out


# --------------------------------------------------------------------------- admin: a user's data


@admin_router.get("/{labeler_id}/export", responses=ADMIN)
def export_user(labeler_id: IdPath, _: AdminOnly, s: ReadSessionDep, chat: ChatDep) -> dict:
    """Everything held about a user: account, conversations and choices, labeling judgements, reward part, files."""
    return export_user_data(s, PersonalDir.at(chat.cfg.personal_dir), store.get_labeler(s, labeler_id))


@admin_router.delete("/{labeler_id}", responses=ADMIN)
def delete_user(labeler_id: IdPath, _: AdminOnly, request: Request, chat: ChatDep) -> DeletedOut:
    """Delete a user: their account, feedback, reward part and adapters (store rows first, then files)."""
    gone = delete_user_data(request.app.state.db, PersonalDir.at(chat.cfg.personal_dir), labeler_id)
    chat.forget(user_key(gone.labeler_id))
    return DeletedOut(user=gone.user, removed=gone.removed, files=gone.files)


# --------------------------------------------------------------------------- the page


@page_router.get("/chat")
def chat_page(request: Request, labeler: CurrentLabeler, s: ReadSessionDep, chat: ChatDep) -> Response:
    policy, ref = chat.policy_for(_adapter_ref(s, labeler.id))
    convs = [{"id": c.id, "title": c.title, "turns": n} for c, n in store.list_conversations(s, labeler)]
    boot = {"conversations": convs, "maxNewTokens": chat.cfg.max_new_tokens, "policy": policy,
            "adapterVersion": ref.version if ref else None}
    return render(request, "chat.html", labeler=labeler, boot=boot)


router = APIRouter()
"""Everything above, registered on the app with one `include_router`."""
for _r in (api_router, admin_router, page_router):
    router.include_router(_r)
