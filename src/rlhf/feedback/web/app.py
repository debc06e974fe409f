"""The labeling web app: `create_app(settings)` -> FastAPI (HTML pages for labelers and admins, JSON API)."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt

from rlhf import __version__
from rlhf.feedback import store
from rlhf.feedback.config import ServeConfig
from rlhf.feedback.db import Database, open_database
from rlhf.feedback.rankings import InvalidJudgement
from rlhf.feedback.web.deps import NotAuthenticated

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
_markdown = MarkdownIt("commonmark", {"html": False}).enable("table")


def render_markdown(text: str) -> str:
    """Markdown to HTML with raw HTML escaped (instructions come from admins, but stay inert)."""
    return _markdown.render(text or "")


def resolve_admin_token(settings: ServeConfig) -> str:
    token = settings.admin_token or os.environ.get("RLHF_ADMIN_TOKEN")
    if not token:
        token = "admin_" + secrets.token_urlsafe(18)
        log.warning("no admin token configured; this run's admin token is %s", token)
    return token


def _templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(HERE / "templates"))
    t.env.filters["markdown"] = render_markdown
    t.env.globals["version"] = __version__
    return t


def create_app(settings: ServeConfig = ServeConfig(), db: Database | None = None) -> FastAPI:
    """The app over `db` (or `settings.db`, opened and migrated at startup and closed at shutdown)."""
    from rlhf.feedback.web.routes import admin, api, chat, label

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = app.state.db is None
        if own:
            app.state.db = open_database(settings.db, synchronous=settings.synchronous)
        try:
            yield
        finally:
            if own:
                app.state.db.close()
                app.state.db = None

    app = FastAPI(title="rlhf feedback", version=__version__, lifespan=lifespan, docs_url="/api/docs", redoc_url=None)
    app.state.settings = settings
    app.state.db = db
    app.state.admin_token = resolve_admin_token(settings)
    app.state.templates = _templates()
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(api.router)
    app.include_router(label.router)
    app.include_router(admin.router)
    app.include_router(chat.router)

    @app.exception_handler(NotAuthenticated)
    async def _not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
        if request.url.path.startswith("/api/"):
            what = "admin token" if exc.admin else "labeler token"
            return JSONResponse({"detail": f"missing or invalid {what}"}, 401, {"WWW-Authenticate": "Bearer"})
        return RedirectResponse("/admin/login" if exc.admin else "/login", 303)

    @app.exception_handler(store.NotFound)
    async def _not_found(request: Request, exc: store.NotFound) -> Response:
        return JSONResponse({"detail": str(exc)}, 404)

    @app.exception_handler(store.Conflict)
    async def _conflict(request: Request, exc: store.Conflict) -> Response:
        return JSONResponse({"detail": str(exc)}, 409)

    @app.exception_handler(InvalidJudgement)
    async def _invalid(request: Request, exc: InvalidJudgement) -> Response:
        return JSONResponse({"detail": str(exc)}, 422)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        message = "; ".join(f"{'.'.join(str(x) for x in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors)
        return JSONResponse({"detail": message, "errors": errors}, 422)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        return {"ok": True}

    return app


def create_app_from_env() -> FastAPI:
    """uvicorn factory (`uvicorn --factory rlhf.feedback.web.app:create_app_from_env`).

    Reads RLHF_FEEDBACK_DB (store path or URL), RLHF_ADMIN_TOKEN and RLHF_SQLITE_SYNCHRONOUS (FULL or NORMAL).
    """
    return create_app(ServeConfig(
        db=os.environ.get("RLHF_FEEDBACK_DB", ServeConfig.db),
        synchronous=os.environ.get("RLHF_SQLITE_SYNCHRONOUS", ServeConfig.synchronous),  # type: ignore[arg-type]
    ))
