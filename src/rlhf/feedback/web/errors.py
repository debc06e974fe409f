"""Route errors: one JSON body for every error status, `responses(...)` to document them, and the handlers.

Every error the server answers is an `ErrorOut`: `{"detail": "<what went wrong, for people>"}`; a request
that does not match the schema (422) also has `errors`, one entry per invalid field. A route lists each
error status it can return, so the OpenAPI spec (and a client generated from it) knows them all:

    @router.get("/api/things/{thing_id}", responses=responses(401, 404, 422))
    def thing(thing_id: IdPath, labeler: CurrentLabeler, s: ReadSessionDep) -> ThingOut:
        ...  # raise store.NotFound / store.Conflict; auth and validation fail by themselves

`add_error_handlers(app)` turns NotAuthenticated (401), store.NotFound (404), store.Conflict (409),
InvalidJudgement and request validation (422) and a busy store (503) into these bodies.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import fastapi.routing
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from rlhf.feedback import store
from rlhf.feedback.db import StoreBusy
from rlhf.feedback.rankings import InvalidJudgement


class FieldError(BaseModel):
    loc: list[Union[str, int]] = Field(description='Where: ["body", "ranking", 0], ["path", "project_id"], ...')
    msg: str
    type: str = Field(description="Pydantic's error type, e.g. missing, int_parsing, extra_forbidden.")


class ErrorOut(BaseModel):
    """The body of every error response."""

    detail: str = Field(description="What went wrong, in a sentence a person can act on.")
    errors: Optional[list[FieldError]] = Field(
        None, description="422 for a request that does not match the schema: one entry per invalid field."
    )


DESCRIPTIONS: dict[int, str] = {
    400: "The body cannot be decoded (not UTF-8).",
    401: "Missing or invalid token (send `Authorization: Bearer <token>`).",
    404: "No such object, or it belongs to someone else (the two are not told apart).",
    409: "The request clashes with what is stored.",
    422: "Invalid request: `detail` says what is wrong; `errors` lists the fields that do not match the schema.",
    503: "The store is busy (a write waited longer than its timeout); retry after `Retry-After` seconds.",
}


def responses(*statuses: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: each error status with the ErrorOut body.

    A status is a number (standard description) or `(status, "what it means on this route")`.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for s in statuses:
        code, text = s if isinstance(s, tuple) else (s, DESCRIPTIONS[s])
        out[code] = {"model": ErrorOut, "description": text}
    return out


def error(status: int, detail: str, errors: list[dict] | None = None, headers: dict | None = None) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status, headers)


def _allowed_methods(request: Request) -> set[str]:
    """Every method of every route on the request's path: Starlette's 405 names only the first route's."""
    table = getattr(request.app.state, "route_methods", None)
    if table is None:  # routes are fixed once the app serves; included routers are flattened by FastAPI
        contexts = getattr(fastapi.routing, "iter_route_contexts", iter)(request.app.routes)
        table = [(compile_path(r.path)[0], set(r.methods)) for r in contexts if getattr(r, "methods", None)]
        request.app.state.route_methods = table
    return {m for regex, methods in table if regex.match(request.url.path) for m in methods}


def add_error_handlers(app: FastAPI) -> None:
    from rlhf.feedback.web.deps import NotAuthenticated

    @app.exception_handler(NotAuthenticated)
    async def _not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
        if request.url.path.startswith("/api/"):
            what = "admin token" if exc.admin else "labeler token"
            return error(401, f"missing or invalid {what}", headers={"WWW-Authenticate": "Bearer"})
        return RedirectResponse("/admin/login" if exc.admin else "/login", 303)

    @app.exception_handler(store.NotFound)
    async def _not_found(request: Request, exc: store.NotFound) -> Response:
        return error(404, str(exc))

    @app.exception_handler(store.Conflict)
    async def _conflict(request: Request, exc: store.Conflict) -> Response:
        return error(409, str(exc))

    @app.exception_handler(InvalidJudgement)
    async def _invalid(request: Request, exc: InvalidJudgement) -> Response:
        return error(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        message = "; ".join(f"{'.'.join(str(x) for x in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors)
        return error(422, message, errors)

    @app.exception_handler(StoreBusy)
    @app.exception_handler(PoolTimeout)
    async def _busy(request: Request, exc: Exception) -> Response:
        return error(503, "the feedback store is busy; retry shortly", headers={"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(sorted(_allowed_methods(request)))
        return error(exc.status_code, str(exc.detail), headers=headers)
