"""JSON API: the labeler loop (next item, submit) and the admin endpoints. Bearer-token or cookie auth.

Every route lists the error statuses it can return (`responses(...)`, see web/errors.py), so /openapi.json
is a contract a generated client can rely on.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from rlhf.feedback import store
from rlhf.feedback.db import Database
from rlhf.feedback.service import project_agreement
from rlhf.feedback.tables import Labeler, Project
from rlhf.feedback.web.deps import (
    AdminOnly,
    CurrentLabeler,
    DatabaseDep,
    IdPath,
    ReadSessionDep,
    SessionDep,
    SettingsDep,
)
from rlhf.feedback.web.errors import responses
from rlhf.feedback.web.schemas import (
    AdminProjectOut,
    AgreementOut,
    AssignmentOut,
    ExclusionIn,
    JudgementIn,
    JudgementOut,
    LabelerAgreementOut,
    LabelerCreated,
    LabelerIn,
    LabelerOut,
    LabelerProgressOut,
    LabelerProjectOut,
    MeOut,
    NextOut,
    ProgressOut,
    assignment_out,
    project_out,
)

router = APIRouter(prefix="/api", tags=["labelers"])
admin = APIRouter(prefix="/api/admin", tags=["admin"])


def next_task(
    db: Database, labeler: Labeler, project_id: int, shuffle: bool
) -> tuple[Project, AssignmentOut | None, store.OwnProgress]:
    """Claim the labeler's next item in a short write transaction, then read what to show from a snapshot.

    The claim does not wait for the disk: a power cut may undo it (the item goes back to the pool, and a
    judgement sent for it gets a 404), but never a judgement, which is synced, and with it every earlier claim.
    """
    with db.session(durable=False) as s:
        assignment_id = store.claim_next(s, labeler.id, project_id)
    with db.read() as s:
        p = store.get_project(s, project_id)
        view = store.assignment_view(s, labeler.id, assignment_id) if assignment_id is not None else None
        return p, assignment_out(view, p, shuffle) if view else None, store.own_progress(s, labeler.id, p)


@router.get("/me", responses=responses(401, 503))
def me(labeler: CurrentLabeler) -> MeOut:
    return MeOut(id=labeler.id, name=labeler.name)


@router.get("/projects", responses=responses(401, 503))
def projects(labeler: CurrentLabeler, s: ReadSessionDep) -> list[LabelerProjectOut]:
    out = []
    for p in store.list_projects(s):
        prog = store.own_progress(s, labeler.id, p)
        out.append(LabelerProjectOut(**project_out(p).model_dump(), done=prog.done, remaining=prog.remaining))
    return out


@router.get("/projects/{project_id}/next", responses=responses(401, (404, "No such project."), 422, 503))
def next_item(project_id: IdPath, labeler: CurrentLabeler, db: DatabaseDep, settings: SettingsDep) -> NextOut:
    """This labeler's open item in the project, claiming a new one if needed (null when none is left)."""
    _, out, prog = next_task(db, labeler, project_id, settings.shuffle_completions)
    return NextOut(assignment=out, progress=ProgressOut(done=prog.done, remaining=prog.remaining))


@router.get(
    "/assignments/{assignment_id}", responses=responses(401, (404, "No such assignment for this labeler."), 422, 503)
)
def get_assignment(
    assignment_id: IdPath, labeler: CurrentLabeler, s: ReadSessionDep, settings: SettingsDep
) -> AssignmentOut:
    a = store.assignment_view(s, labeler.id, assignment_id)
    return assignment_out(a, store.get_project(s, a.project_id), settings.shuffle_completions)


@router.post(
    "/assignments/{assignment_id}/judgement", status_code=201,
    responses={
        200: {"model": JudgementOut, "description": "A retry of the judgement already stored: nothing written."},
        **responses(
            400, 401, (404, "No such assignment for this labeler."),
            (409, "The assignment already has a different judgement."),
            (422, "Not a judgement of this item (ids missing, repeated or unknown, an empty tier, the wrong "
                  "mode for the project) or a body that does not match the schema."),
            503,
        ),
    },
)
def submit(
    assignment_id: IdPath, body: JudgementIn, labeler: CurrentLabeler, s: SessionDep, response: Response
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


@admin.get("/projects", responses=responses(401, 503))
def admin_projects(_: AdminOnly, s: ReadSessionDep) -> list[AdminProjectOut]:
    return [
        AdminProjectOut(**project_out(p).model_dump(), **vars(store.project_progress(s, p)))
        for p in store.list_projects(s)
    ]


@admin.get("/projects/{project_id}/labelers", responses=responses(401, (404, "No such project."), 422, 503))
def admin_labeler_progress(project_id: IdPath, _: AdminOnly, s: ReadSessionDep) -> list[LabelerProgressOut]:
    return [LabelerProgressOut(**vars(x)) for x in store.labeler_progress(s, store.get_project(s, project_id))]


@admin.get("/projects/{project_id}/agreement", responses=responses(401, (404, "No such project."), 422, 503))
def admin_agreement(project_id: IdPath, _: AdminOnly, s: ReadSessionDep) -> AgreementOut:
    report = project_agreement(s, store.get_project(s, project_id))
    return AgreementOut(
        alpha=report.alpha, alpha_metric=report.alpha_metric, items=report.items,
        labelers=[LabelerAgreementOut(**vars(a)) for a in report.labelers], flagged=report.flagged,
    )


@admin.put(
    "/projects/{project_id}/exclusions/{labeler_id}", status_code=204,
    responses=responses(400, 401, (404, "No such project or labeler."), 422, 503),
)
def admin_exclude(
    project_id: IdPath, labeler_id: IdPath, _: AdminOnly, s: SessionDep, body: ExclusionIn | None = None
) -> None:
    """Leave the labeler out of the project's consensus and export."""
    p, lab = store.get_project(s, project_id), store.get_labeler(s, labeler_id)
    store.set_excluded(s, p, lab, True, body.reason if body else "")
    s.commit()


@admin.delete(
    "/projects/{project_id}/exclusions/{labeler_id}", status_code=204,
    responses=responses(401, (404, "No such project or labeler."), 422, 503),
)
def admin_include(project_id: IdPath, labeler_id: IdPath, _: AdminOnly, s: SessionDep) -> None:
    """Count the labeler in the project's consensus and export again."""
    store.set_excluded(s, store.get_project(s, project_id), store.get_labeler(s, labeler_id), False)
    s.commit()


@admin.post(
    "/labelers", status_code=201, responses=responses(400, 401, (409, "A labeler with this name exists."), 422, 503)
)
def admin_add_labeler(body: LabelerIn, _: AdminOnly, s: SessionDep) -> LabelerCreated:
    lab, token = store.create_labeler(s, body.name)
    out = LabelerCreated(id=lab.id, name=lab.name, token=token)
    s.commit()
    return out


@admin.get("/labelers", responses=responses(401, 503))
def admin_labelers(_: AdminOnly, s: ReadSessionDep) -> list[LabelerOut]:
    return [LabelerOut(id=lab.id, name=lab.name, active=lab.active) for lab in store.list_labelers(s)]
