"""Admin pages: projects and progress, per-labeler agreement, flagging and exclusion, labeler tokens."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from rlhf.feedback import store
from rlhf.feedback.service import ai_audit_rows, project_agreement, project_ai_agreement
from rlhf.feedback.web.deps import ADMIN_COOKIE, AdminOnly, IdPath, ReadSessionDep, SessionDep
from rlhf.feedback.web.routes.label import render, set_cookie

router = APIRouter(prefix="/admin", include_in_schema=False)


@router.get("/login")
def admin_login_page(request: Request) -> Response:
    return render(request, "admin_login.html", error=None)


@router.post("/login")
def admin_login(request: Request, token: Annotated[str, Form(max_length=200)] = "") -> Response:
    if not token or not hmac.compare_digest(token.strip().encode(), request.app.state.admin_token.encode()):
        return render(request, "admin_login.html", 401, error="That admin token is not valid.")
    response = RedirectResponse("/admin", 303)
    set_cookie(request, response, ADMIN_COOKIE, token.strip(), samesite="strict")
    return response


def _overview(request: Request, s, new_labeler: tuple[str, str] | None = None, error: str | None = None) -> Response:  # noqa: ANN001
    projects = [(p, store.project_progress(s, p)) for p in store.list_projects(s)]
    return render(
        request, "admin_index.html", projects=projects, labelers=store.list_labelers(s),
        new_labeler=new_labeler, error=error, admin=True,
    )


@router.get("")
def admin_index(request: Request, _: AdminOnly, s: ReadSessionDep) -> Response:
    return _overview(request, s)


@router.post("/labelers")
def admin_add_labeler(
    request: Request, _: AdminOnly, s: SessionDep, name: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    try:
        lab, token = store.create_labeler(s, name)
    except (ValueError, store.Conflict) as e:
        s.rollback()
        return _overview(request, s, error=str(e))
    s.commit()
    return _overview(request, s, new_labeler=(lab.name, token))


@router.get("/projects/{project_id}")
def admin_project(project_id: IdPath, request: Request, _: AdminOnly, s: ReadSessionDep) -> Response:
    p = store.get_project(s, project_id)
    report = project_agreement(s, p)
    progress = {x.name: x for x in store.labeler_progress(s, p, [lab for lab in store.list_labelers(s) if lab.kind == "human"])}
    labelers = {lab.name: lab for lab in store.list_labelers(s)}
    flags = [r for r in store.project_judgements(s, p) if r.kind == "flag"]
    return render(
        request, "admin_project.html", project=p, progress=store.project_progress(s, p), report=report,
        scored={a.labeler: a for a in report.labelers}, ai_report=project_ai_agreement(s, p),
        labeler_progress=progress, labelers=labelers, excluded=store.excluded_labelers(s, p), flags=flags, admin=True,
    )


@router.post("/projects/{project_id}/labelers/{labeler_id}/exclusion")
def admin_set_exclusion(
    project_id: IdPath, labeler_id: IdPath, _: AdminOnly, s: SessionDep, excluded: Annotated[bool, Form()] = True,
) -> Response:
    store.set_excluded(
        s, store.get_project(s, project_id), store.get_labeler(s, labeler_id), excluded,
        "excluded by admin" if excluded else "",
    )
    s.commit()
    return RedirectResponse(f"/admin/projects/{project_id}", 303)


# --------------------------------------------------------------------------- AI labels: audit item by item

AUDIT_RESPONSES: dict[int | str, dict] = {
    303: {"description": "Not logged in as admin: redirects to /admin/login"},
    404: {"description": "No such project, item or AI labeler (JSON body with `detail`)"},
}


def tiers_text(tiers) -> str:  # noqa: ANN001
    """((1,), (0, 2)) -> "B > A = C": positions as the letters the audit page shows."""
    return " > ".join(" = ".join(chr(ord("A") + p) for p in tier) for tier in tiers) if tiers else "—"


@router.get("/projects/{project_id}/ai/{labeler_id}", responses=AUDIT_RESPONSES)
def admin_ai_audit(project_id: IdPath, labeler_id: IdPath, request: Request, _: AdminOnly, s: ReadSessionDep) -> Response:
    """Every item an AI labeler judged, its choice and confidence beside the people's consensus."""
    p, lab = store.get_project(s, project_id), store.get_labeler(s, labeler_id)
    rows = ai_audit_rows(s, p, lab.name)
    report = next((r for r in project_ai_agreement(s, p).labelers if r.agreement.labeler == lab.name), None)
    return render(request, "admin_ai.html", project=p, ai=lab, rows=rows, report=report, tiers_text=tiers_text, admin=True)


@router.get("/projects/{project_id}/items/{item_id}", responses=AUDIT_RESPONSES)
def admin_item(project_id: IdPath, item_id: IdPath, request: Request, _: AdminOnly, s: ReadSessionDep) -> Response:
    """One item as labelers see it, with every judgement on it; an AI's shows its choice, confidence and evidence."""
    p = store.get_project(s, project_id)
    item, judgements = store.item_judgements(s, p, item_id)
    ai_ids = {lab.name: lab.id for lab in store.list_labelers(s) if lab.kind == "ai"}
    return render(request, "admin_item.html", project=p, item=item, judgements=judgements, ai_ids=ai_ids,
                  tiers_text=tiers_text, admin=True)
