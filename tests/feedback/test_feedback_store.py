"""The store: migrations, assignment claiming, submissions, exclusion, import and export (library level)."""

from __future__ import annotations

import json

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from feedback_helpers import AIRCON, HOT, HOT_PROMPT, NOT_HOT, NOTHING, generations
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from rlhf.data import DataError, read_pairs
from rlhf.feedback import (
    ExportConfig,
    add_labeler,
    add_labelers,
    agreement,
    exclude_flagged,
    export_pairs,
    import_generations,
    open_database,
    set_excluded,
    store,
)
from rlhf.feedback.migrations import SCRIPT_LOCATION, current_revision
from rlhf.feedback.rankings import InvalidJudgement
from rlhf.feedback.store import JudgementInput
from rlhf.feedback.tables import Assignment, Base


def test_migrations_build_the_orm_schema_with_wal_and_foreign_keys(db, db_path):
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    head = ScriptDirectory(SCRIPT_LOCATION).get_current_head()
    assert head == "0003" and current_revision(db.engine) == head
    again = open_database(db_path)  # idempotent upgrade on an existing file
    assert current_revision(again.engine) == head
    again.close()
    with pytest.raises(IntegrityError), db.session() as s:
        s.add(Assignment(project_id=1, item_id=999, labeler_id=999))


def test_import_is_idempotent_and_reads_generate_output(db, tmp_path):
    path = tmp_path / "completions.jsonl"
    path.write_text("".join(json.dumps(g.to_dict() | {"model": "m"}) + "\n" for g in generations(3)))
    first = import_generations(db, path, "p", instructions="hi")
    again = import_generations(db, path, "p")
    assert (first.added, first.skipped, again.added, again.skipped, again.items) == (3, 0, 0, 3, 3)
    with db.session() as s:
        assert store.count_rows(s)["completions"] == 9
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"id": "x", "prompt": "p", "completions": ["only"]}) + "\n")
    with pytest.raises(DataError, match="at least 2 completions"):
        import_generations(db, one, "q")
    assert import_generations(db, one, "q", mode="thumbs").added == 1


def test_tokens_are_stored_hashed(db, db_path):
    token = add_labeler(db, "alice")
    assert token.startswith("rlhf_") and len(token) > 30
    assert token.encode() not in db_path.read_bytes() + (db_path.parent / (db_path.name + "-wal")).read_bytes()
    with db.session() as s:
        assert store.labeler_by_token(s, token).name == "alice"
        assert store.labeler_by_token(s, token + "x") is None
        with pytest.raises(store.Conflict):
            store.create_labeler(s, "alice")


def test_each_item_goes_to_k_labelers_never_twice_to_one(db):
    import_generations(db, generations(2), "p", labelers_per_item=3)
    tokens = add_labelers(db, [f"l{i}" for i in range(5)])
    seen: dict[str, list[int]] = {name: [] for name in tokens}
    with db.session() as s:
        p = store.get_project(s, "p")
        for _ in range(3):
            for name in tokens:
                lab = store.get_labeler(s, name)
                a = store.next_assignment(s, lab, p)
                if a is None:
                    continue
                assert store.next_assignment(s, lab, p).id == a.id  # open assignment comes back
                seen[name].append(a.item_id)
                store.submit_judgement(s, lab, a.id, JudgementInput(ranking=[c.id for c in a.item.completions]))
        rows = s.execute(text("SELECT item_id, COUNT(*) FROM assignments GROUP BY item_id")).all()
    assert sorted(n for _, n in rows) == [3, 3]
    assert all(len(items) == len(set(items)) for items in seen.values())
    assert sum(len(v) for v in seen.values()) == 6
    # items that already have labelers come first, so item 1 fills up before item 2 starts
    assert seen == {"l0": [1, 2], "l1": [1], "l2": [1], "l3": [2], "l4": [2]}


def test_submission_is_idempotent_and_private(hot_db):
    tokens = add_labelers(hot_db, ["a", "b"])
    with hot_db.session() as s:
        p = store.get_project(s, "hot")
        a_lab, b_lab = store.get_labeler(s, "a"), store.get_labeler(s, "b")
        a = store.next_assignment(s, a_lab, p)
        ids = [c.id for c in a.item.completions]
        j, created = store.submit_judgement(s, a_lab, a.id, JudgementInput(ranking=[ids[1], [ids[0], ids[2]]]))
        retry = JudgementInput(ranking=[ids[1], [ids[2], ids[0]]])  # same tie, listed in another order
        again, created_again = store.submit_judgement(s, a_lab, a.id, retry)
        assert created and not created_again and again.id == j.id and j.ranking == [[1], [0, 2]]
        with pytest.raises(store.Conflict):
            store.submit_judgement(s, a_lab, a.id, JudgementInput(ranking=ids))
        with pytest.raises(store.NotFound):
            store.submit_judgement(s, b_lab, a.id, JudgementInput(ranking=ids))
        with pytest.raises(InvalidJudgement, match="rankings, not thumbs"):
            store.submit_judgement(s, a_lab, a.id, JudgementInput(thumbs={i: 1 for i in ids}))
        assert store.count_rows(s)["judgements"] == 1
    assert tokens


def _label_hot(db, dissent: bool = True) -> None:
    order = {"l1": [AIRCON, NOTHING, NOT_HOT], "l2": [AIRCON, NOTHING, NOT_HOT], "l3": [NOT_HOT, NOTHING, AIRCON]}
    add_labelers(db, list(order))
    with db.session() as s:
        p = store.get_project(s, "hot")
        for name, texts in order.items():
            lab = store.get_labeler(s, name)
            a = store.next_assignment(s, lab, p)
            by_text = {c.text: c.id for c in a.item.completions}
            store.submit_judgement(s, lab, a.id, JudgementInput(ranking=[by_text[t] for t in texts]))


def test_design_notes_export_through_the_library(hot_db, tmp_path):
    _label_hot(hot_db)
    assert agreement(hot_db, "hot").flagged == ["l3"]
    summary = export_pairs(hot_db, "hot", ExportConfig(raw_pairs=True), tmp_path / "out")
    assert (summary.items, summary.pairs, summary.dropped_ties, summary.raw_pairs) == (1, 3, 0, 9)
    assert summary.flagged_labelers == ("l3",) and summary.excluded_labelers == ()
    pairs = read_pairs(tmp_path / "out" / "pairs.jsonl")
    assert [(p.chosen, p.rejected) for p in pairs] == [(AIRCON, NOTHING), (AIRCON, NOT_HOT), (NOTHING, NOT_HOT)]
    assert all(p.prompt == HOT_PROMPT and p.weight == 1.0 for p in pairs)
    ranking = json.loads((tmp_path / "out" / "rankings.jsonl").read_text())
    assert ranking["ranking"] == [[1], [0], [2]] and ranking["labelers"] == ["l1", "l2", "l3"]
    assert json.loads((tmp_path / "out" / "export_summary.json").read_text())["pairs"] == 3
    assert (tmp_path / "out" / "export.yaml").exists()

    assert exclude_flagged(hot_db, "hot") == ["l3"]
    excluded = export_pairs(hot_db, "hot", ExportConfig(), tmp_path / "ex")
    assert excluded.excluded_labelers == ("l3",) and excluded.pairs == 3
    assert json.loads((tmp_path / "ex" / "rankings.jsonl").read_text())["labelers"] == ["l1", "l2"]
    set_excluded(hot_db, "hot", "l3", False)
    assert agreement(hot_db, "hot").labelers[2].excluded is False


def test_export_ties_and_unusable_items(db, tmp_path):
    import_generations(db, generations(2), "p", labelers_per_item=2)
    add_labelers(db, ["a", "b"])
    with db.session() as s:
        p = store.get_project(s, "p")
        for name in ("a", "b"):
            lab = store.get_labeler(s, name)
            a = store.next_assignment(s, lab, p)   # item 1: both tie completions 0 and 1 on top
            ids = [c.id for c in a.item.completions]
            store.submit_judgement(s, lab, a.id, JudgementInput(ranking=[[ids[0], ids[1]], ids[2]]))
            a = store.next_assignment(s, lab, p)   # item 2: both flag it
            store.submit_judgement(s, lab, a.id, JudgementInput(flag_reason="garbled"))
    dropped = export_pairs(db, "p", ExportConfig(), tmp_path / "d")
    assert (dropped.items, dropped.pairs, dropped.dropped_ties, dropped.unusable_items) == (1, 2, 1, 1)
    halved = export_pairs(db, "p", ExportConfig(ties="half"), tmp_path / "h")
    assert (halved.pairs, halved.dropped_ties) == (4, 0)
    weights = sorted(p.weight for p in read_pairs(tmp_path / "h" / "pairs.jsonl"))
    assert weights == [0.5, 0.5, 1.0, 1.0]


def test_thumbs_project_exports_up_over_down(db, tmp_path):
    import_generations(db, generations(1, k=3), "t", mode="thumbs", labelers_per_item=3)
    add_labelers(db, ["a", "b", "c"])
    votes = {"a": (1, -1, -1), "b": (1, -1, 1), "c": (1, 1, -1)}  # majority: up, down, down
    with db.session() as s:
        p = store.get_project(s, "t")
        for name, v in votes.items():
            lab = store.get_labeler(s, name)
            a = store.next_assignment(s, lab, p)
            thumbs = {c.id: x for c, x in zip(a.item.completions, v)}
            store.submit_judgement(s, lab, a.id, JudgementInput(thumbs=thumbs))
    summary = export_pairs(db, "t", ExportConfig(), tmp_path)
    assert (summary.pairs, summary.dropped_ties) == (2, 1)
    assert {(p.chosen, p.rejected) for p in read_pairs(tmp_path / "pairs.jsonl")} == {
        ("answer 0.0", "answer 0.1!"), ("answer 0.0", "answer 0.2!!")
    }


def test_hot_fixture_is_the_design_notes_example():
    assert HOT.completions == (NOTHING, AIRCON, NOT_HOT) and HOT.prompt == HOT_PROMPT
