"""JSON API: the labeler loop (next item, submit) and the admin endpoints. Bearer-token or cookie auth."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from rlhf.feedback import store
from rlhf.feedback.service import project_agreement
from rlhf.feedback.web.deps import AdminOnly, CurrentLabeler, SessionDep
from rlhf.feedback.web.schemas import (
    AssignmentOut,
    ExclusionIn,
    JudgementIn,
    JudgementOut,
    LabelerCreated,
    LabelerIn,
    NextOut,
    ProgressOut,
    ProjectOut,
    assignment_out,
    project_out,
)

router = APIRouter(prefix="/api", tags=["api"])


@router.get("/me")
def me(labeler: CurrentLabeler) -> dict:
    return {"id": labeler.id, "name": labeler.name}


@router.get("/projects")
def projects(labeler: CurrentLabeler, s: SessionDep) -> list[dict]:
    out = []
    for p in store.list_projects(s):
        prog = store.labeler_progress(s, p, [labeler])[0]
        out.append(project_out(p).model_dump() | {"done": prog.done, "remaining": prog.remaining})
    return out


@router.get("/projects/{project_id}/next")
def next_item(project_id: int, labeler: CurrentLabeler, s: SessionDep, request: Request) -> NextOut:
    """This labeler's open item in the project, claiming a new one if needed (null when none is left)."""
    p = store.get_project(s, project_id)
    a = store.next_assignment(s, labeler, p)
    out = assignment_out(a, p, request.app.state.settings.shuffle_completions) if a else None
    prog = store.labeler_progress(s, p, [labeler])[0]
    s.commit()
    return NextOut(assignment=out, progress=ProgressOut(done=prog.done, remaining=prog.remaining))


@router.get("/assignments/{assignment_id}")
def get_assignment(assignment_id: int, labeler: CurrentLabeler, s: SessionDep, request: Request) -> AssignmentOut:
    a = store.get_assignment(s, labeler, assignment_id)
    return assignment_out(a, store.get_project(s, a.project_id), request.app.state.settings.shuffle_completions)


@router.post("/assignments/{assignment_id}/judgement", status_code=201)
def submit(
    assignment_id: int, body: JudgementIn, labeler: CurrentLabeler, s: SessionDep, response: Response
) -> JudgementOut:
    """Record a ranking, thumbs or flag. One transaction; a retried identical submission answers 200."""
    j, created = store.submit_judgement(
        s, labeler, assignment_id,
        store.JudgementInput(body.ranking, body.thumbs_values(), body.flag_reason, body.seconds),
    )
    out = JudgementOut(judgement_id=j.id, assignment_id=assignment_id, kind=j.kind, duplicate=not created)
    s.commit()
    if not created:
        response.status_code = 200
    return out


# --------------------------------------------------------------------------- admin


@router.get("/admin/projects")
def admin_projects(_: AdminOnly, s: SessionDep) -> list[dict]:
    return [project_out(p).model_dump() | vars(store.project_progress(s, p)) for p in store.list_projects(s)]


@router.get("/admin/projects/{project_id}/labelers")
def admin_labeler_progress(project_id: int, _: AdminOnly, s: SessionDep) -> list[dict]:
    return [vars(x) for x in store.labeler_progress(s, store.get_project(s, project_id))]


@router.get("/admin/projects/{project_id}/agreement")
def admin_agreement(project_id: int, _: AdminOnly, s: SessionDep) -> dict:
    report = project_agreement(s, store.get_project(s, project_id))
    return {
        "alpha": report.alpha, "alpha_metric": report.alpha_metric, "items": report.items,
        "labelers": [vars(a) for a in report.labelers], "flagged": report.flagged,
    }


@router.put("/admin/projects/{project_id}/exclusions/{labeler_id}", status_code=204)
def admin_exclude(
    project_id: int, labeler_id: int, _: AdminOnly, s: SessionDep, body: ExclusionIn | None = None
) -> None:
    p, lab = store.get_project(s, project_id), store.get_labeler(s, labeler_id)
    store.set_excluded(s, p, lab, True, body.reason if body else "")
    s.commit()


@router.delete("/admin/projects/{project_id}/exclusions/{labeler_id}", status_code=204)
def admin_include(project_id: int, labeler_id: int, _: AdminOnly, s: SessionDep) -> None:
    store.set_excluded(s, store.get_project(s, project_id), store.get_labeler(s, labeler_id), False)
    s.commit()


@router.post("/admin/labelers", status_code=201)
def admin_add_labeler(body: LabelerIn, _: AdminOnly, s: SessionDep) -> LabelerCreated:
    lab, token = store.create_labeler(s, body.name)
    out = LabelerCreated(id=lab.id, name=lab.name, token=token)
    s.commit()
    return out


@router.get("/admin/labelers")
def admin_labelers(_: AdminOnly, s: SessionDep) -> list[dict]:
    return [{"id": lab.id, "name": lab.name, "active": lab.active} for lab in store.list_labelers(s)]


__all__ = ["router", "ProjectOut"]
