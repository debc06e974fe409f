"""Request dependencies: the store, read and write sessions, the logged-in labeler, the admin check.

`ReadSessionDep` is a read-only snapshot: on SQLite it never waits for a writer nor makes one wait.
`SessionDep` may write: its transaction starts at its first statement (on SQLite, that is when the
store's write lock is taken) and ends at `s.commit()`, which the route calls before answering, so an
acknowledged write is durable. Keep the work between the two short; read what the answer needs after
the commit, in a read session. Never hold a read session open while writing.
"""

from __future__ import annotations

import hmac
from typing import Annotated, AsyncIterator, Optional

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from rlhf.feedback import store
from rlhf.feedback.config import ServeConfig
from rlhf.feedback.db import Database
from rlhf.feedback.tables import Labeler

LABELER_COOKIE = "rlhf_token"
ADMIN_COOKIE = "rlhf_admin"
MAX_ID = 2**31 - 1
"""Ids are 32-bit integer columns (PostgreSQL `integer`)."""

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


class NotAuthenticated(Exception):
    """Missing or wrong credentials: 401 on the API, a redirect to the login page for HTML."""

    def __init__(self, admin: bool = False):
        self.admin = admin


# Dependencies without I/O are `async def`: FastAPI runs sync ones in its thread pool, a hop per call.
async def get_db(request: Request) -> Database:
    return request.app.state.db


async def get_settings(request: Request) -> ServeConfig:
    return request.app.state.settings


DatabaseDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[ServeConfig, Depends(get_settings)]


async def read_session(db: DatabaseDep) -> AsyncIterator[Session]:
    with db.read() as s:  # opening is free (no statement yet); closing ends a local SQLite transaction
        yield s


async def write_session(db: DatabaseDep) -> AsyncIterator[Session]:
    with db.sessions() as s:
        yield s


# scope="function": the session closes before the response is sent, not after.
ReadSessionDep = Annotated[Session, Depends(read_session, scope="function")]
SessionDep = Annotated[Session, Depends(write_session, scope="function")]

labeler_bearer = HTTPBearer(
    scheme_name="LabelerToken", auto_error=False,
    description="A labeler's token (`rlhf feedback labelers add`). The browser pages use the login cookie instead.",
)
admin_bearer = HTTPBearer(
    scheme_name="AdminToken", auto_error=False,
    description="The server's admin token (`RLHF_ADMIN_TOKEN`, or the one `rlhf serve` prints).",
)


def _credential(request: Request, bearer: HTTPAuthorizationCredentials | None, cookie: str) -> str | None:
    return bearer.credentials if bearer else request.cookies.get(cookie)


def current_labeler(
    request: Request, db: DatabaseDep,
    bearer: Annotated[Optional[HTTPAuthorizationCredentials], Depends(labeler_bearer)],
) -> Labeler:
    token = _credential(request, bearer, LABELER_COOKIE)
    if token:
        with db.read() as s:
            labeler = store.labeler_by_token(s, token)
        if labeler is not None:
            return labeler
    raise NotAuthenticated()


def is_admin(request: Request, bearer: HTTPAuthorizationCredentials | None) -> bool:
    token = _credential(request, bearer, ADMIN_COOKIE)
    return bool(token) and hmac.compare_digest(token.encode(), request.app.state.admin_token.encode())


async def admin_only(
    request: Request, bearer: Annotated[Optional[HTTPAuthorizationCredentials], Depends(admin_bearer)]
) -> None:
    if not is_admin(request, bearer):
        raise NotAuthenticated(admin=True)


CurrentLabeler = Annotated[Labeler, Depends(current_labeler)]
AdminOnly = Annotated[None, Depends(admin_only)]
