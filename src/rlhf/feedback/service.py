"""Library entry points of the feedback stage: import generations, add labelers, agreement, exclusion, export.

Each is one call on an open `Database` (see `open_database`); `run_import` / `run_export` take a config
and open the store themselves (the CLI's path).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sqlalchemy.orm import Session

from rlhf.config import save_config
from rlhf.data import DataError, read_generations, write_json, write_jsonl
from rlhf.feedback import store
from rlhf.feedback.agreement import AgreementReport, AIAgreement, Rating, agreement_report, ai_vs_consensus
from rlhf.feedback.config import AgreementConfig, ExportConfig, ImportConfig
from rlhf.feedback.db import Database, open_database
from rlhf.feedback.pairs import (
    IndexPair,
    consensus,
    pairs_from_thumbs,
    pairs_from_tiers,
    thumbs_consensus,
    weight_by_agreement,
)
from rlhf.feedback.tables import Item, Project
from rlhf.types import Generation, PreferencePair

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportSummary:
    project: str
    project_id: int
    added: int
    skipped: int
    """Generations whose id was already in the project."""
    items: int


def resolve_instructions(text_or_path: str) -> str:
    """Instructions given inline, or as the path of a Markdown/text file."""
    if text_or_path.endswith((".md", ".markdown", ".txt")):
        path = Path(text_or_path)
        if not path.is_file():
            raise DataError(f"{path}: instructions file not found")
        return path.read_text(encoding="utf-8")
    return text_or_path


def import_generations(
    db: Database,
    generations: str | Path | Sequence[Generation],
    project: str,
    criterion: str = "harmless and helpful",
    instructions: str = "",
    mode: str = "rank",
    labelers_per_item: int = 3,
) -> ImportSummary:
    """Load `rlhf generate` output (a path or Generation records) into `project`, creating it if needed."""
    gens = read_generations(generations) if isinstance(generations, (str, Path)) else list(generations)
    if mode == "rank" and any(len(g.completions) < 2 for g in gens):
        raise DataError(f"{generations}: rank mode needs at least 2 completions per prompt; use mode=thumbs")
    with db.session() as s:
        try:
            p = store.get_project(s, project)
        except store.NotFound:
            p = store.create_project(s, project, criterion, instructions, mode, labelers_per_item)
        added, skipped = store.add_items(s, p, gens)
        total = store.project_progress(s, p).items
        summary = ImportSummary(p.name, p.id, added, skipped, total)
    log.info("imported %d items into %r (%d already there)", added, project, skipped)
    return summary


def run_import(cfg: ImportConfig) -> ImportSummary:
    db = open_database(cfg.db)
    try:
        return import_generations(
            db, cfg.generations, cfg.project, cfg.criterion, resolve_instructions(cfg.instructions),
            cfg.mode, cfg.labelers_per_item,
        )
    finally:
        db.close()


def add_labeler(db: Database, name: str) -> str:
    """Create a labeler; returns its login token (shown once, stored hashed)."""
    with db.session() as s:
        return store.create_labeler(s, name)[1]


def add_labelers(db: Database, names: Sequence[str]) -> dict[str, str]:
    return {name: add_labeler(db, name) for name in names}


def project_id(db: Database, project: str | int) -> int:
    with db.session() as s:
        return store.get_project(s, project).id


def ratings_from_rows(rows: Sequence[store.JudgementRow]) -> list[Rating]:
    return [Rating(r.item_id, r.labeler, r.n, r.ranking, r.thumbs) for r in rows if r.kind != "flag"]


def project_agreement(s: Session, project: Project, cfg: AgreementConfig = AgreementConfig()) -> AgreementReport:
    """The agreement report of a project's human labelers inside an open session (AI labelers: `project_ai_agreement`)."""
    ai = store.ai_labeler_models(s)
    ratings = [r for r in ratings_from_rows(store.project_judgements(s, project)) if r.labeler not in ai]
    return agreement_report(ratings, store.excluded_labelers(s, project), cfg)


def agreement(db: Database, project: str | int, cfg: AgreementConfig = AgreementConfig()) -> AgreementReport:
    """Kendall tau per labeler vs consensus, Krippendorff's alpha, and flagged labelers."""
    with db.session() as s:
        return project_agreement(s, store.get_project(s, project), cfg)


def set_excluded(db: Database, project: str | int, labeler: str | int, excluded: bool = True, reason: str = "") -> None:
    """Leave a labeler out of (or put them back into) the project's consensus and export."""
    with db.session() as s:
        store.set_excluded(s, store.get_project(s, project), store.get_labeler(s, labeler), excluded, reason)


def exclude_flagged(db: Database, project: str | int, cfg: AgreementConfig = AgreementConfig()) -> list[str]:
    """Exclude every labeler the agreement report flags; returns their names."""
    report = agreement(db, project, cfg)
    for a in report.labelers:
        if a.flagged:
            set_excluded(db, project, a.labeler, True, f"flagged: {a.flag_reason}")
    return report.flagged


@dataclass(frozen=True)
class ExportSummary:
    project: str
    items: int
    """Items with a consensus (written to rankings.jsonl)."""
    pairs: int
    dropped_ties: int
    """Pairs of completions left out because the consensus ties them (or thumbs give no preference)."""
    excluded_labelers: tuple[str, ...]
    flagged_labelers: tuple[str, ...]
    unusable_items: int
    """Items most labelers flagged as unusable."""
    unlabeled_items: int
    """Items with fewer usable judgements than `min_rankings`."""
    raw_pairs: int
    out_dir: str


def _pair_record(item: Item, p: IndexPair, extra: dict) -> dict:
    texts = [c.text for c in item.completions]
    meta = {"item_id": item.external_id, "chosen_index": p.chosen, "rejected_index": p.rejected} | extra
    return PreferencePair(item.prompt, texts[p.chosen], texts[p.rejected], p.weight, meta).to_dict()


def export_pairs(
    db: Database, project: str | int, cfg: ExportConfig = ExportConfig(), out_dir: str | Path | None = None
) -> ExportSummary:
    """Consensus rankings and pairs (preferred first) from the non-excluded labelers' judgements.

    Writes pairs.jsonl (read by `rlhf.data.read_pairs`), rankings.jsonl, export_summary.json,
    export.yaml and, with `cfg.raw_pairs`, raw_pairs.jsonl.
    """
    out = Path(out_dir or cfg.out_dir)
    with db.session() as s:
        p = store.get_project(s, project)
        ai = store.ai_labeler_models(s)  # AI labels are audited beside the people's, never exported with them
        rows = [r for r in store.project_judgements(s, p) if r.labeler not in ai]
        excluded = store.excluded_labelers(s, p)
        n_items = store.project_progress(s, p).items
        items = store.items_with_completions(s, {r.item_id for r in rows})
        name, mode = p.name, p.mode
    report = agreement_report(ratings_from_rows(rows), excluded, cfg.agreement)
    by_item: dict[int, list[store.JudgementRow]] = defaultdict(list)
    for r in rows:
        if r.labeler not in excluded:
            by_item[r.item_id].append(r)
    pairs, rankings, raw = [], [], []
    dropped = unusable = 0
    for item_id, judged in by_item.items():
        item = items[item_id]
        usable = [r for r in judged if r.kind != "flag"]
        if len(judged) - len(usable) > len(usable):
            unusable += 1
            continue
        if len(usable) < cfg.min_rankings:
            continue
        n = usable[0].n
        base = {"project": name, "labelers": len(usable)}
        if mode == "rank":
            tiers = [r.ranking for r in usable]
            cons = consensus(tiers, n, cfg.method)
            item_pairs, tied = pairs_from_tiers(cons.tiers, cfg.ties)
            if cfg.weighting == "agreement":
                item_pairs = weight_by_agreement(item_pairs, tiers, n)
            dropped += tied if cfg.ties == "drop" else 0
            record = {"ranking": [list(t) for t in cons.tiers], "scores": [round(x, 6) for x in cons.scores]}
            for r in usable if cfg.raw_pairs else ():
                raw += [_pair_record(item, q, base | {"labeler": r.labeler}) for q in pairs_from_tiers(r.ranking)[0]]
        else:
            votes = thumbs_consensus([r.thumbs for r in usable])
            item_pairs, tied = pairs_from_thumbs(votes)
            dropped += tied
            record = {"votes": list(votes)}
            for r in usable if cfg.raw_pairs else ():
                raw += [_pair_record(item, q, base | {"labeler": r.labeler}) for q in pairs_from_thumbs(r.thumbs)[0]]
        method = {"method": cfg.method if mode == "rank" else "thumbs"}
        pairs += [_pair_record(item, q, base | method) for q in item_pairs]
        rankings.append({
            "id": item.external_id, "prompt": item.prompt, "completions": [c.text for c in item.completions],
            **record, "labelers": [r.labeler for r in usable], "flags": len(judged) - len(usable),
        })
    summary = ExportSummary(
        name, len(rankings), len(pairs), dropped, tuple(sorted(excluded)), tuple(report.flagged), unusable,
        n_items - len(rankings) - unusable, len(raw), str(out),
    )
    write_jsonl(out / "pairs.jsonl", pairs)
    write_jsonl(out / "rankings.jsonl", rankings)
    if cfg.raw_pairs:
        write_jsonl(out / "raw_pairs.jsonl", raw)
    write_json(out / "export_summary.json", dataclasses.asdict(summary))
    save_config(dataclasses.replace(cfg, project=name, out_dir=str(out)), out / "export.yaml")
    log.info("exported %d pairs from %d items of %r -> %s", len(pairs), len(rankings), name, out)
    return summary


def run_export(cfg: ExportConfig) -> ExportSummary:
    db = open_database(cfg.db)
    try:
        return export_pairs(db, cfg.project, cfg)
    finally:
        db.close()


# --------------------------------------------------------------------------- AI labelers vs people


@dataclass(frozen=True)
class AILabelerReport:
    agreement: AIAgreement
    model: str
    judged: int
    """Items this AI labeler judged in the project."""
    mean_confidence: float | None
    alpha_with: float | None
    """Krippendorff's alpha over the counted people plus this AI labeler."""


@dataclass(frozen=True)
class AIAgreementReport:
    alpha_people: float | None
    """Krippendorff's alpha over the counted people alone."""
    labelers: tuple[AILabelerReport, ...]


def project_ai_agreement(s: Session, project: Project, cfg: AgreementConfig = AgreementConfig()) -> AIAgreementReport:
    """Each AI labeler vs the consensus of the counted people: tau, pairwise agreement, alpha with and without it."""
    models = store.ai_labeler_models(s)
    ratings = ratings_from_rows(store.project_judgements(s, project))
    excluded = store.excluded_labelers(s, project)
    people = [r for r in ratings if r.labeler not in models]
    present = sorted({r.labeler for r in ratings} & set(models))
    rows = []
    for a in ai_vs_consensus(ratings, present, excluded, cfg):
        conf = [c for c in store.ai_confidences(s, project, store.get_labeler(s, a.labeler)).values() if c is not None]
        mine = [r for r in ratings if r.labeler == a.labeler]
        rows.append(AILabelerReport(a, models[a.labeler], len(mine), sum(conf) / len(conf) if conf else None,
                                    agreement_report(people + mine, excluded, cfg).alpha))
    return AIAgreementReport(agreement_report(people, excluded, cfg).alpha, tuple(rows))


def ai_agreement(db: Database, project: str | int, cfg: AgreementConfig = AgreementConfig()) -> AIAgreementReport:
    with db.session() as s:
        return project_ai_agreement(s, store.get_project(s, project), cfg)


@dataclass(frozen=True)
class AIAuditRow:
    item_id: int
    external_id: str
    prompt: str
    ai_ranking: tuple[tuple[int, ...], ...]
    confidence: float | None
    people: int
    """Counted human rankings of the item."""
    consensus: tuple[tuple[int, ...], ...] | None
    agreement: AIAgreement


def ai_audit_rows(s: Session, project: Project, labeler: str, cfg: AgreementConfig = AgreementConfig()) -> list[AIAuditRow]:
    """Every item the AI labeler judged, with the people's consensus; disagreements first, then by confidence."""
    lab = store.get_labeler(s, labeler)
    if lab.kind != "ai":
        raise store.NotFound(f"{labeler!r} is not an AI labeler")
    rows = [r for r in store.project_judgements(s, project) if r.kind != "flag"]
    excluded, models = store.excluded_labelers(s, project), store.ai_labeler_models(s)
    conf = store.ai_confidences(s, project, lab)
    by_item: dict[int, list[store.JudgementRow]] = defaultdict(list)
    for r in rows:
        by_item[r.item_id].append(r)
    out = []
    for item_id, judged in by_item.items():
        mine = [r for r in judged if r.labeler == labeler]
        if not mine:
            continue
        people = [r for r in judged if r.labeler not in models and r.labeler not in excluded]
        cons = consensus([r.ranking for r in people], people[0].n, cfg.method).tiers if people else None
        (agree,) = ai_vs_consensus(ratings_from_rows(judged), [labeler], excluded, cfg)
        out.append(AIAuditRow(item_id, mine[0].external_id, "", mine[0].ranking, conf.get(item_id), len(people), cons, agree))
    items = store.items_with_completions(s, [r.item_id for r in out])
    out = [dataclasses.replace(r, prompt=items[r.item_id].prompt) for r in out]
    return sorted(out, key=lambda r: (r.agreement.agreement if r.agreement.pairs else 2.0, -(r.confidence or 0.0)))
