"""Labeler pages: login, project list, the labeling page, instructions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from rlhf.feedback import store
from rlhf.feedback.web.deps import (
    ADMIN_COOKIE,
    LABELER_COOKIE,
    CurrentLabeler,
    DatabaseDep,
    IdPath,
    ReadSessionDep,
    SettingsDep,
)

router = APIRouter(include_in_schema=False)


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    return request.app.state.templates.TemplateResponse(request, name, context, status_code=status_code)


def set_cookie(request: Request, response: Response, key: str, value: str, samesite: str = "lax") -> None:
    response.set_cookie(
        key, value, httponly=True, samesite=samesite, secure=request.app.state.settings.secure_cookies,
        max_age=30 * 24 * 3600,
    )


@router.get("/login")
def login_page(request: Request) -> Response:
    return render(request, "login.html", error=None)


@router.post("/login")
def login(request: Request, s: ReadSessionDep, token: Annotated[str, Form(max_length=200)] = "") -> Response:
    labeler = store.labeler_by_token(s, token.strip()) if token.strip() else None
    if labeler is None:
        return render(request, "login.html", 401, error="That token is not valid. Ask your project admin for yours.")
    response = RedirectResponse("/", 303)
    set_cookie(request, response, LABELER_COOKIE, token.strip())
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", 303)
    response.delete_cookie(LABELER_COOKIE)
    response.delete_cookie(ADMIN_COOKIE)
    return response


@router.get("/")
def home(request: Request, labeler: CurrentLabeler, s: ReadSessionDep) -> Response:
    rows = []
    for p in store.list_projects(s):
        prog = store.own_progress(s, labeler.id, p)
        rows.append((p, prog))
    return render(request, "projects.html", labeler=labeler, rows=rows)


@router.get("/projects/{project_id}")
def label_page(
    project_id: IdPath, request: Request, labeler: CurrentLabeler, db: DatabaseDep, settings: SettingsDep
) -> Response:
    """The next item for this labeler (their open one, else a newly claimed one), or a done page."""
    from rlhf.feedback.web.routes.api import next_task

    p, task, prog = next_task(db, labeler, project_id, settings.shuffle_completions)
    return render(request, "label.html", labeler=labeler, project=p, task=task, progress=prog)


@router.get("/projects/{project_id}/instructions")
def instructions_page(project_id: IdPath, request: Request, labeler: CurrentLabeler, s: ReadSessionDep) -> Response:
    return render(request, "instructions.html", labeler=labeler, project=store.get_project(s, project_id))
