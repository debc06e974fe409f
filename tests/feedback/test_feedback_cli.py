"""`rlhf feedback ...` commands end to end on a SQLite file."""

from __future__ import annotations

import json

from feedback_helpers import AIRCON, HOT, NOT_HOT, NOTHING
from typer.testing import CliRunner

from rlhf.cli import app
from rlhf.data import read_pairs
from rlhf.feedback import open_database, store
from rlhf.feedback.store import JudgementInput


def test_import_labelers_agreement_export(tmp_path):
    gens = tmp_path / "completions.jsonl"
    gens.write_text(json.dumps(HOT.to_dict()) + "\n")
    instructions = tmp_path / "guide.md"
    instructions.write_text("# Guide\nBe careful.")
    db = str(tmp_path / "fb.db")
    run = CliRunner().invoke

    r = run(app, ["feedback", "import", "-g", str(gens), "--db", db, "-p", "hot",
                  "--instructions", str(instructions), "--k", "3"])
    assert r.exit_code == 0, r.output
    assert "added 1 items" in r.output
    r = run(app, ["feedback", "labelers", "add", "l1", "l2", "l3", "--db", db])
    assert r.exit_code == 0, r.output
    tokens = dict(line.split() for line in r.output.strip().splitlines() if " rlhf_" in line)
    assert set(tokens) == {"l1", "l2", "l3"} and all(t.startswith("rlhf_") for t in tokens.values())

    d = open_database(db)
    orders = {"l1": [AIRCON, NOTHING, NOT_HOT], "l2": [AIRCON, NOTHING, NOT_HOT], "l3": [NOT_HOT, NOTHING, AIRCON]}
    with d.session() as s:
        p = store.get_project(s, "hot")
        assert p.instructions.startswith("# Guide") and p.labelers_per_item == 3
        for name, order in orders.items():
            lab = store.labeler_by_token(s, tokens[name])
            a = store.next_assignment(s, lab, p)
            ids = {c.text: c.id for c in a.item.completions}
            store.submit_judgement(s, lab, a.id, JudgementInput(ranking=[ids[t] for t in order]))
    d.close()

    r = run(app, ["feedback", "agreement", "-p", "hot", "--db", db, "--exclude-flagged"])
    assert r.exit_code == 0, r.output
    assert "flagged" in r.output and "Excluded from export: l3" in r.output
    out = tmp_path / "out"
    r = run(app, ["feedback", "export", "-p", "hot", "--db", db, "-o", str(out), "--raw"])
    assert r.exit_code == 0, r.output
    assert "pairs" in r.output and "l3" in r.output
    summary = json.loads((out / "export_summary.json").read_text())
    assert (summary["pairs"], summary["excluded_labelers"], summary["raw_pairs"]) == (3, ["l3"], 6)
    assert len(read_pairs(out / "pairs.jsonl")) == 3

    r = run(app, ["feedback", "export", "-p", "nope", "--db", db, "-o", str(out)])
    assert r.exit_code == 2 and "no project 'nope'" in r.output
    r = run(app, ["feedback", "exclude", "l3", "-p", "hot", "--db", db, "--undo"])
    assert r.exit_code == 0 and "included in hot" in r.output


def test_serve_workers_flag_reaches_the_server(tmp_path, monkeypatch):
    import rlhf.feedback.server as server

    seen = []
    monkeypatch.setattr(server, "serve", seen.append)
    db = str(tmp_path / "fb.db")
    r = CliRunner().invoke(app, ["serve", "--db", db, "--port", "8123", "--workers", "3", "--admin-token", "t"])
    assert r.exit_code == 0, r.output
    assert (seen[0].workers, seen[0].port, seen[0].db, seen[0].admin_token) == (3, 8123, db, "t")
    assert "3 workers" in r.output
    r = CliRunner().invoke(app, ["serve", "--db", db, "--workers", "0"])
    assert r.exit_code == 2 and "workers must be >= 1" in r.output and len(seen) == 1
