"""Request dependencies: a database session, the logged-in labeler, the admin check."""

from __future__ import annotations

import hmac
from typing import Annotated, Iterator

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from rlhf.feedback import store
from rlhf.feedback.tables import Labeler

LABELER_COOKIE = "rlhf_token"
ADMIN_COOKIE = "rlhf_admin"


class NotAuthenticated(Exception):
    """Missing or wrong credentials: 401 on the API, a redirect to the login page for HTML."""

    def __init__(self, admin: bool = False):
        self.admin = admin


def get_session(request: Request) -> Iterator[Session]:
    """A session per request. Writers call `commit()` before answering, so an acknowledged write is durable."""
    db = request.app.state.db
    with db.serialized(), db.sessions() as s:
        yield s


# scope="function": the session closes before the response is sent, not after.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def _credential(request: Request, cookie: str) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.cookies.get(cookie)


def current_labeler(request: Request, s: SessionDep) -> Labeler:
    token = _credential(request, LABELER_COOKIE)
    labeler = store.labeler_by_token(s, token) if token else None
    if labeler is None:
        raise NotAuthenticated()
    return labeler


def is_admin(request: Request) -> bool:
    token = _credential(request, ADMIN_COOKIE)
    return bool(token) and hmac.compare_digest(token.encode(), request.app.state.admin_token.encode())


def admin_only(request: Request) -> None:
    if not is_admin(request):
        raise NotAuthenticated(admin=True)


CurrentLabeler = Annotated[Labeler, Depends(current_labeler)]
AdminOnly = Annotated[None, Depends(admin_only)]
