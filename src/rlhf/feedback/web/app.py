"""The labeling web app: `create_app(settings)` -> FastAPI (HTML pages for labelers and admins, JSON API)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt

from rlhf import __version__
from rlhf.config import load_config
from rlhf.feedback.config import ServeConfig
from rlhf.feedback.db import Database, open_database
from rlhf.feedback.web.errors import add_error_handlers

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


def create_app(settings: ServeConfig = ServeConfig(), db: Database | None = None, *, migrate: bool = True) -> FastAPI:
    """The app over `db`, or over `settings.db`: opened (and migrated unless `migrate=False`) at startup,
    closed at shutdown."""
    from rlhf.feedback.web.routes import admin, api, chat, label

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Sync routes run in anyio's thread pool. A few threads overlap the waits (fsync, the write lock, the
        # network); more only queue on the GIL, and a writer holding the store's lock then waits for it.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
        own = app.state.db is None
        if own:
            app.state.db = open_database(
                settings.db, migrate=migrate, synchronous=settings.synchronous, pool_size=settings.pool_size
            )
        try:
            yield
        finally:
            if own:
                app.state.db.close()
                app.state.db = None

    app = FastAPI(
        title="rlhf feedback", version=__version__, lifespan=lifespan, docs_url="/api/docs", redoc_url=None,
        description="Labeling API: labelers claim items and submit rankings, thumbs or flags; admins follow "
                    "progress and agreement. Every error body is `ErrorOut`.",
    )
    app.state.settings = settings
    app.state.db = db
    app.state.admin_token = resolve_admin_token(settings)
    app.state.templates = _templates()
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(api.router)
    app.include_router(api.admin)
    app.include_router(label.router)
    app.include_router(admin.router)
    app.include_router(chat.router)
    add_error_handlers(app)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        return {"ok": True}

    return app


SERVE_CONFIG_ENV = "RLHF_SERVE_CONFIG"
"""Env var through which `rlhf serve --workers N` hands its resolved ServeConfig (JSON) to each worker."""


def create_app_from_env() -> FastAPI:
    """uvicorn factory (`uvicorn --factory rlhf.feedback.web.app:create_app_from_env`).

    Reads RLHF_SERVE_CONFIG (a ServeConfig as JSON, set by `rlhf serve --workers N`, whose parent process
    has already migrated the store), else RLHF_FEEDBACK_DB (store path or URL), RLHF_ADMIN_TOKEN and
    RLHF_SQLITE_SYNCHRONOUS (FULL or NORMAL).
    """
    if raw := os.environ.get(SERVE_CONFIG_ENV):
        return create_app(load_config(ServeConfig, **json.loads(raw)), migrate=False)
    return create_app(ServeConfig(
        db=os.environ.get("RLHF_FEEDBACK_DB", ServeConfig.db),
        synchronous=os.environ.get("RLHF_SQLITE_SYNCHRONOUS", ServeConfig.synchronous),  # type: ignore[arg-type]
    ))
