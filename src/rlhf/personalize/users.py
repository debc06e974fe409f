"""A user's personal data as a whole: status, export and deletion (feedback rows, reward part, adapters)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from rlhf.feedback import store
from rlhf.feedback.db import Database
from rlhf.feedback.tables import Labeler
from rlhf.personalize.layout import PersonalDir


def _reward_part(pdir: PersonalDir, labeler_id: int) -> dict | None:
    weights, meta = pdir.reward_part(labeler_id)
    if not meta.is_file():
        return None
    part = json.loads(meta.read_text(encoding="utf-8"))
    if weights.is_file():
        from safetensors.torch import load_file

        part["weights"] = {k: v.tolist() for k, v in load_file(str(weights)).items()}
    return part


def export_user_data(s: Session, pdir: PersonalDir, labeler: Labeler) -> dict:
    """Everything held about a user: the store's rows (see `store.export_user`), their reward part, their files."""
    files = [str(p.relative_to(pdir.root)) for p in pdir.user_files(labeler.id)]
    return store.export_user(s, labeler) | {"reward_part": _reward_part(pdir, labeler.id), "files": files}


@dataclass(frozen=True)
class DeletedUser:
    user: str
    labeler_id: int
    removed: dict[str, int]
    """Store rows removed, by kind."""
    files: list[str]
    """Files removed, relative to the personal folder."""


def delete_user_data(db: Database, pdir: PersonalDir, ref: int | str) -> DeletedUser:
    """Delete a user (by id or name): store rows first (one transaction), then their files.

    In this order a concurrent `rlhf personalize` cannot publish the user again: publishing needs the user's
    row, and files it writes afterwards are removed by its own check (or by the next run's orphan sweep).
    """
    with db.session() as s:
        lab = store.get_labeler(s, ref)
        name, lid = lab.name, lab.id
        removed = store.delete_user(s, lab)
    files = [str(p.relative_to(pdir.root)) for p in pdir.remove_user(lid)]
    return DeletedUser(name, lid, removed, files)


@dataclass(frozen=True)
class UserStatus:
    labeler_id: int
    name: str
    choices: int
    last_judgement_id: int
    adapter_version: int | None
    adapter_judgement_id: int | None
    """The newest judgement the live adapter was trained with."""
    reward_part: bool

    @property
    def due(self) -> bool:
        """New feedback since the live adapter (what the next `rlhf personalize` would train on)."""
        return self.choices > 0 and (self.adapter_judgement_id or 0) < self.last_judgement_id


def user_status(db: Database, personal_dir: str | Path) -> list[UserStatus]:
    pdir = PersonalDir.at(personal_dir)
    with db.session() as s:
        rows = store.chat_feedback(s)
        adapters = store.personal_adapters(s)
        labelers = store.list_labelers(s)
    counts: dict[int, list[int]] = {}
    for r in rows:
        counts.setdefault(r.labeler_id, []).append(r.judgement_id)
    out = []
    for lab in labelers:
        ids = counts.get(lab.id, [])
        a = adapters.get(lab.id)
        out.append(UserStatus(lab.id, lab.name, len(ids), max(ids, default=0), a.version if a else None,
                              a.last_judgement_id if a else None, pdir.reward_part(lab.id)[1].is_file()))
    return out
