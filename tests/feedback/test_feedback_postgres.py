"""The same store code on PostgreSQL: a throwaway local cluster (Debian's `postgresql`) or RLHF_TEST_POSTGRES_URL.

Skipped, with the reason, when neither PostgreSQL nor psycopg is available. The HTTP concurrency and kill -9
tests run on PostgreSQL too, with several workers (test_feedback_server.py).
"""

from __future__ import annotations

import threading

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from feedback_helpers import AIRCON, HOT, NOT_HOT, NOTHING, generations
from sqlalchemy import text

from rlhf.feedback import (
    ExportConfig,
    ServeConfig,
    add_labelers,
    agreement,
    export_pairs,
    import_generations,
    open_database,
    serve_in_background,
    store,
)
from rlhf.feedback.store import JudgementInput
from rlhf.feedback.tables import Base


@pytest.fixture()
def pg(pg_url):
    """The store on a fresh PostgreSQL database (see conftest: a throwaway local cluster or RLHF_TEST_POSTGRES_URL)."""
    db = open_database(pg_url)
    yield db
    db.close()


def test_postgres_migrations_match_the_orm(pg):
    with pg.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_postgres_concurrent_claims_never_exceed_k(pg):
    import_generations(pg, generations(20), "load", labelers_per_item=3)
    names = [f"t{i}" for i in range(16)]
    add_labelers(pg, names)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(names))

    def work(name: str) -> None:
        try:
            barrier.wait()
            while True:
                with pg.session() as s:
                    p, lab = store.get_project(s, "load"), store.get_labeler(s, name)
                    a = store.next_assignment(s, lab, p)
                    if a is None:
                        return
                    aid, ids = a.id, [c.id for c in a.item.completions]
                with pg.session() as s:
                    store.submit_judgement(s, store.get_labeler(s, name), aid, JudgementInput(ranking=ids))
        except BaseException as e:  # noqa: BLE001  reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    with pg.session() as s:
        assert store.count_rows(s)["judgements"] == 60
        counts = s.execute(text("SELECT item_id, COUNT(*) FROM assignments GROUP BY item_id")).all()
        assert {n for _, n in counts} == {3} and len(counts) == 20
        assert store.done_assignments_without_judgement(s) == 0


def test_postgres_design_notes_over_http(pg, tmp_path):
    import_generations(pg, [HOT], "hot")
    tokens = add_labelers(pg, ["l1", "l2", "l3"])
    orders = {"l1": [AIRCON, NOTHING, NOT_HOT], "l2": [AIRCON, NOTHING, NOT_HOT], "l3": [NOT_HOT, NOTHING, AIRCON]}
    with serve_in_background(ServeConfig(port=0, admin_token="a"), pg) as url:
        for name, order in orders.items():
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens[name]}"}) as c:
                task = c.get("/api/projects/1/next").json()["assignment"]
                ids = {x["text"]: x["id"] for x in task["item"]["completions"]}
                body = {"ranking": [ids[t] for t in order]}
                assert c.post(f"/api/assignments/{task['assignment_id']}/judgement", json=body).status_code == 201
                assert c.post(f"/api/assignments/{task['assignment_id']}/judgement", json=body).status_code == 200
    assert agreement(pg, "hot").flagged == ["l3"]
    assert export_pairs(pg, "hot", ExportConfig(), tmp_path).pairs == 3
