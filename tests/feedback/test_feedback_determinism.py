"""Concurrent simulated labelers over HTTP give the same exported pairs for the same seed (pre-assigned design)."""

from __future__ import annotations

from collections import Counter

import pytest
from feedback_helpers import generations

from rlhf.feedback import ExportConfig, ServeConfig, SimulationConfig, add_labelers, export_pairs, import_generations, open_database, store
from rlhf.feedback.labelers import SimulatedLabeler, run_simulated_labelers
from rlhf.feedback.server import serve_in_background

NAMES = ["honest-1", "honest-2", "honest-3", "careless"]


def taste(prompt, texts):
    return [-len(t) for t in texts]  # shorter is better, a taste with ties broken by the labelers' noise


def label_and_export(tmp_path, seed: int, preassign: bool = True) -> tuple[str, dict]:
    db = open_database(str(tmp_path / "feedback.db"))
    try:
        imp = import_generations(db, generations(12, k=4), "det", labelers_per_item=3)
        tokens = add_labelers(db, NAMES)
        if preassign:
            with db.session() as s:
                p = store.get_project(s, "det")
                assert store.preassign_balanced(s, p, [store.get_labeler(s, n) for n in NAMES], seed) == 12 * 3
        labelers = [SimulatedLabeler(n, tokens[n], bad=n == "careless") for n in NAMES]
        sim = SimulationConfig(noise=1.0, scale="absolute", tie_margin=0.5, seed=seed)
        with serve_in_background(ServeConfig(db=str(tmp_path / "feedback.db"), port=0, admin_token="x"), db) as url:
            summary = run_simulated_labelers(url, imp.project_id, labelers, cfg=sim, taste=taste)
        export_pairs(db, "det", ExportConfig(), out_dir=tmp_path / "out")
        with db.session() as s:
            rows = store.project_judgements(s, store.get_project(s, "det"))
    finally:
        db.close()
    assert not summary.errors and summary.total == 12 * 3
    return (tmp_path / "out" / "pairs.jsonl").read_text(), Counter(r.labeler for r in rows)


def test_same_seed_same_pairs_despite_concurrency(tmp_path):
    pairs_a, per_labeler = label_and_export(tmp_path / "a", seed=3)
    pairs_b, _ = label_and_export(tmp_path / "b", seed=3)
    assert pairs_a == pairs_b and pairs_a.count("\n") > 0
    assert sorted(per_labeler.values()) == [9, 9, 9, 9]  # balanced: 12 items x 3 / 4 labelers
    pairs_c, _ = label_and_export(tmp_path / "c", seed=4)
    assert pairs_c != pairs_a  # the seed does matter


def test_preassignment_is_balanced_seeded_and_never_repeats(db):
    import_generations(db, generations(10, k=2), "p", labelers_per_item=2)
    add_labelers(db, ["a", "b", "c"])
    with db.session() as s:
        p = store.get_project(s, "p")
        labs = [store.get_labeler(s, n) for n in ("a", "b", "c")]
        # one item already claimed by "a" through the normal path: it keeps it and gets one more labeler
        first = store.next_assignment(s, labs[0], p)
        assert store.preassign_balanced(s, p, labs, seed=0) == 10 * 2 - 1
        assert store.preassign_balanced(s, p, labs, seed=0) == 0  # nothing left to assign
        progress = {lp.name: lp.pending for lp in store.labeler_progress(s, p, labs)}
        assert sum(progress.values()) == 20 and max(progress.values()) - min(progress.values()) <= 1
        # next_assignment serves the pre-assigned items, in assignment order, and nothing else
        assert store.next_assignment(s, labs[0], p).id == first.id
    with db.session() as s:
        from sqlalchemy import func, select

        from rlhf.feedback.tables import Assignment, Item

        per_item = s.execute(select(Assignment.item_id, func.count()).group_by(Assignment.item_id)).all()
        assert sorted(n for _, n in per_item) == [2] * 10
        assert set(s.scalars(select(Item.n_assigned))) == {2}


def test_preassignment_needs_k_labelers(db):
    import_generations(db, generations(2, k=2), "p", labelers_per_item=3)
    add_labelers(db, ["a", "b"])
    with db.session() as s:
        with pytest.raises(ValueError, match="only 2 labelers"):
            store.preassign_balanced(s, store.get_project(s, "p"), [store.get_labeler(s, n) for n in ("a", "b")], 0)
