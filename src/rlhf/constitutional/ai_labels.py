"""AI judgements in the feedback store: the model becomes a labeler (kind 'ai') named after itself, and
each item's verdict is submitted through `store.submit_judgement`, as a person's ranking would be,
with its confidence and per-pair probabilities. People's agreement statistics then cover it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rlhf.feedback import store
from rlhf.feedback.db import open_database
from rlhf.types import Generation


def labeler_name(model: str) -> str:
    """"ai:" + the model's name (its alias, or a folder's last parts): `ai:smollm2-135m-instruct`."""
    parts = Path(str(model).rstrip("/")).parts
    tail = "/".join(parts[-2:]) if len(parts) > 1 and parts[-1] in ("policy", "adapter", "model") else parts[-1]
    return ("ai:" + tail)[:200]


def project_items(db_url: str, project: str) -> list[Generation]:
    """A project's items as generations (id = the item's external id), for judging."""
    db = open_database(db_url)
    try:
        with db.session() as s:
            p = store.get_project(s, project)
            if p.mode != "rank":
                raise ValueError(f"project {project!r} collects thumbs; AI feedback labels rank-mode projects")
            return [Generation(it.external_id, it.prompt, tuple(c.text for c in it.completions)) for it in store.project_items(s, p)]
    finally:
        db.close()


def record_ai_labels(db_url: str, project: str, labeler: str, model: str, verdicts: Sequence, min_confidence: float = 0.0) -> int:
    """Submit each verdict (`ai_feedback.ItemVerdict`) as the AI labeler's ranking; items it already judged are
    skipped, so a resumed run adds only the rest. One transaction per item. Returns judgements written."""
    db = open_database(db_url)
    written = 0
    try:
        with db.session() as s:
            p = store.get_project(s, project)
            lab = store.get_or_create_ai_labeler(s, labeler, model)
            items = {it.external_id: it for it in store.project_items(s, p)}
            done = set(store.ai_confidences(s, p, lab))
            lab_id = lab.id
        for v in verdicts:
            item = items.get(v.id)
            if item is None or item.id in done:
                continue
            if tuple(c.text for c in item.completions) != tuple(v.completions):
                raise ValueError(f"item {v.id!r} of project {project!r} differs from the judged completions")
            ids = [c.id for c in item.completions]
            ranking = [[ids[pos] for pos in tier] for tier in v.ranking(min_confidence)]
            details = {"principle": v.principle, "model": model,
                       "pairs": [{"i": x.i, "j": x.j, "p_ij": round(x.p_ij, 4), "p_ji": round(x.p_ji, 4)} for x in v.pairs]}
            with db.session() as s:
                lab = store.get_labeler(s, lab_id)
                a = store.assign_to_ai(s, lab, item)  # reads item.id and project_id only
                store.submit_judgement(s, lab, a.id, store.JudgementInput(
                    ranking=ranking, confidence=round(v.confidence, 4), details=details))
            written += 1
    finally:
        db.close()
    return written
