"""AI labels in the feedback store: a model labels through the same store as people, its judgements are
audited in the admin pages, and get the same agreement statistics (against the people's consensus)."""

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from rlhf.cli import app as cli_app
from rlhf.constitutional.ai_feedback import AIFeedbackConfig, ItemVerdict, run_ai_feedback
from rlhf.feedback import import_generations, open_database
from rlhf.feedback import store
from rlhf.feedback.agreement import Rating, ai_vs_consensus
from rlhf.feedback.config import ExportConfig, ServeConfig
from rlhf.feedback.service import add_labelers, agreement, ai_agreement, export_pairs
from rlhf.feedback.tables import Assignment, Judgement, Labeler
from rlhf.feedback.web.app import create_app
from rlhf.types import Generation

ADMIN = "admin-test-token"
ITEMS = [
    Generation("roast-1", "Roast my friend who is always late.", ("You are a lazy idiot.", "Maybe buy a watch, friend!", "I can't help.")),
    Generation("roast-2", "Insult my neighbour's dog.", ("What a cute dog.", "Shut up, stupid mutt.", "Dogs bark.")),
    Generation("roast-3", "Make fun of my haircut.", ("Bold look!", "It looks awful, you clown.", "Haircuts grow back.")),
    Generation("ai-only", "Say something mean about Mondays.", ("Mondays are hard.", "Mondays stink.", "I like Mondays.")),
]
# The people agree: best first, by completion position.
HUMAN = {"roast-1": [[1], [2], [0]], "roast-2": [[0], [2], [1]], "roast-3": [[0], [2], [1]]}


def test_ai_vs_consensus_by_hand():
    r = [
        Rating(1, "h1", 3, ((0,), (1,), (2,))), Rating(1, "h2", 3, ((0,), (1,), (2,))), Rating(1, "ai", 3, ((0,), (2,), (1,))),
        # Borda: 1 gets 1 + 0.5, 0 gets 0 + 0.5 -> consensus 1 > 0; the AI ties them: no agreement, tau undefined
        Rating(2, "h1", 2, ((1,), (0,))), Rating(2, "h2", 2, ((0, 1),)), Rating(2, "ai", 2, ((0, 1),)),
        Rating(3, "ai", 2, ((0,), (1,))),  # nobody else: not compared
        Rating(4, "gone", 2, ((1,), (0,))), Rating(4, "ai", 2, ((0,), (1,))),  # only an excluded person: not compared
    ]
    (a,) = ai_vs_consensus(r, ["ai"], exclude=["gone"])
    # item 1: agrees on (0,1) and (0,2), not (1,2); tau-b of ranks [1,3,2] vs [1,2,3] = (2 - 1) / 3
    assert (a.items, a.pairs, a.agree) == (2, 4, 2) and a.agreement == 0.5
    assert a.tau == pytest.approx(1 / 3)


@pytest.fixture()
def labeled_db(tmp_path):
    """Three people rank three items identically through the store; a fourth item is left to the AI."""
    path = tmp_path / "feedback.db"
    db = open_database(path)
    import_generations(db, ITEMS, "roasts", "harmless and helpful", labelers_per_item=3)
    add_labelers(db, ["ann", "bob", "cy"])
    for name in ("ann", "bob", "cy"):
        while True:
            with db.session() as s:
                lab, p = store.get_labeler(s, name), store.get_project(s, "roasts")
                a = store.next_assignment(s, lab, p)
                if a is None:
                    break
                if a.item.external_id not in HUMAN:  # nobody ranks the AI-only item: flag it instead
                    store.submit_judgement(s, lab, a.id, store.JudgementInput(flag_reason="skip"))
                    continue
                ids = [c.id for c in a.item.completions]
                store.submit_judgement(s, lab, a.id, store.JudgementInput(ranking=[[ids[i] for i in t] for t in HUMAN[a.item.external_id]]))
    yield path, db
    db.close()


def test_ai_labels_land_in_the_store_and_get_the_people_s_statistics(tiny_lm, tiny_lm_dir, labeled_db, tmp_path):
    path, db = labeled_db
    with db.session() as s:
        before = store.project_progress(s, store.get_project(s, "roasts"))
    export_before = export_pairs(db, "roasts", ExportConfig(), out_dir=tmp_path / "exp0")
    human_report = agreement(db, "roasts")

    cfg = AIFeedbackConfig(model=str(tiny_lm_dir), project="roasts", db=str(path), out_dir=str(tmp_path / "aif"), generations=None)
    summary = run_ai_feedback(cfg, model_and_tokenizer=tiny_lm)
    name = f"ai:{tiny_lm_dir.name}"
    assert summary.labeler == name and summary.stored == 4 and summary.prompts == 4
    verdicts = {v.id: v for v in (ItemVerdict.from_record(json.loads(x)) for x in (tmp_path / "aif" / "judgements.jsonl").read_text().splitlines())}

    # 1. In the store as a labeler's judgements, through the same tables, with confidence and evidence.
    with db.session() as s:
        lab = s.scalar(select(Labeler).where(Labeler.name == name))
        assert (lab.kind, lab.model) == ("ai", str(tiny_lm_dir))
        rows = s.execute(select(Assignment, Judgement).join(Judgement).where(Assignment.labeler_id == lab.id)).all()
        assert len(rows) == 4 and all(a.status == "done" and j.kind == "rank" for a, j in rows)
        for a, j in rows:
            v = verdicts[a.item.external_id]
            assert [tuple(t) for t in j.ranking] == list(v.ranking())
            assert j.confidence == pytest.approx(v.confidence, abs=1e-4) and 0.5 <= j.confidence <= 1.0
            assert len(j.details["pairs"]) == 3 and j.details["principle"] == v.principle
        # AI labels take no human slot and do not count as human progress
        assert store.project_progress(s, store.get_project(s, "roasts")) == before
    # 2. People's report and export unchanged; the AI report compares it with the people's consensus.
    assert agreement(db, "roasts") == human_report
    export_after = export_pairs(db, "roasts", ExportConfig(), out_dir=tmp_path / "exp1")
    assert (tmp_path / "exp1" / "pairs.jsonl").read_text() == (tmp_path / "exp0" / "pairs.jsonl").read_text()
    assert export_after.pairs == export_before.pairs
    ai = ai_agreement(db, "roasts")
    (r,) = ai.labelers
    agree = sum(
        1 for item, best_first in HUMAN.items() for x in range(3) for y in range(3)
        if best_first.index([x]) < best_first.index([y]) and _rank(verdicts[item], x) < _rank(verdicts[item], y)
    )
    assert (r.agreement.items, r.agreement.pairs, r.agreement.agree, r.judged) == (3, 9, agree, 4)
    assert r.mean_confidence == pytest.approx(sum(round(v.confidence, 4) for v in verdicts.values()) / 4, abs=1e-6)
    assert ai.alpha_people == pytest.approx(1.0)  # the people agree perfectly
    assert r.alpha_with is not None and r.alpha_with <= 1.0
    # 3. Resuming labels nothing twice.
    assert run_ai_feedback(cfg, model_and_tokenizer=tiny_lm).stored == 0

    # 4. `rlhf feedback agreement` reports it.
    out = CliRunner().invoke(cli_app, ["feedback", "agreement", "--project", "roasts", "--db", str(path)])
    assert out.exit_code == 0, out.output
    assert "AI labelers vs the human consensus" in out.output and name in out.output
    assert f"{agree}/9 pairs" in out.output

    # 5. The admin pages show it, and an admin can audit each AI-labeled item.
    with TestClient(create_app(ServeConfig(admin_token=ADMIN), db), follow_redirects=False) as c:
        assert c.get("/admin/projects/1/items/1").status_code == 303  # not logged in
        c.post("/admin/login", data={"token": ADMIN})
        page = c.get("/admin/projects/1").text
        assert 'id="ai-labelers"' in page and name in page and f"{agree}/9 pairs" in page
        audit = c.get(f"/admin/projects/1/ai/{lab.id}")
        assert audit.status_code == 200 and audit.text.count("<tr data-item=") == 4
        ai_only = next(a for a, _ in rows if a.item.external_id == "ai-only")
        item = c.get(f"/admin/projects/1/items/{ai_only.item_id}").text
        v = verdicts["ai-only"]
        cards = item.split('<article class="completion"')[1:]
        assert [k for k, card in enumerate(cards) if "AI's choice" in card] == list(v.ranking()[0])
        assert f"{v.confidence:.3f}" in item and f"Principle <strong>{v.principle}</strong>" in item
        assert item.count("<td>A vs B</td>") == 1 and "B vs C" in item  # the evidence: every pair, both orders
        assert c.get("/admin/projects/1/items/999").status_code == 404
        assert c.get("/admin/projects/1/ai/1").status_code == 404  # ann is a person


def _rank(v: ItemVerdict, pos: int) -> int:
    return next(k for k, tier in enumerate(v.ranking()) if pos in tier)


def test_migration_0002_upgrades_an_existing_store(tmp_path):
    from sqlalchemy import text

    from rlhf.feedback.db import make_engine
    from rlhf.feedback.migrations import current_revision, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO labelers (name, token_hash, active, created_at) VALUES ('ann', 'h', 1, '2025-01-01')"))
    engine.dispose()
    db = open_database(tmp_path / "old.db")
    from alembic.script import ScriptDirectory

    from rlhf.feedback.migrations import SCRIPT_LOCATION

    assert current_revision(db.engine) == ScriptDirectory(SCRIPT_LOCATION).get_current_head()
    with db.session() as s:
        ann = store.get_labeler(s, "ann")
        assert (ann.kind, ann.model) == ("human", None)
        assert store.get_or_create_ai_labeler(s, "ai:m", "m").kind == "ai"
        with pytest.raises(store.Conflict, match="is a person"):
            store.get_or_create_ai_labeler(s, "ann", "m")
    db.close()
