"""Against `rlhf serve` on loopback: the design-notes example, 24 concurrent labelers and kill -9 (SQLite with 1 and
2 workers, PostgreSQL with 2), simulated labelers."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest
from feedback_helpers import (
    ADMIN,
    AIRCON,
    HOT_PROMPT,
    NOT_HOT,
    NOTHING,
    generations,
    kill_all,
    serve_process,
    worker_pids,
)
from sqlalchemy import text

from rlhf.data import read_pairs
from rlhf.feedback import (
    ExportConfig,
    ServeConfig,
    SimulationConfig,
    add_labelers,
    agreement,
    export_pairs,
    import_generations,
    open_database,
    store,
)
from rlhf.feedback.labelers import SimulatedLabeler, run_simulated_labelers
from rlhf.feedback.server import serve_in_background


def test_design_notes_example_through_the_real_app(hot_db, db_path, tmp_path):
    tokens = add_labelers(hot_db, ["labeler1", "labeler2", "labeler3"])
    orders = {
        "labeler1": [AIRCON, NOTHING, NOT_HOT],
        "labeler2": [AIRCON, NOTHING, NOT_HOT],
        "labeler3": [NOT_HOT, NOTHING, AIRCON],
    }
    with serve_process(db_path) as (url, _):
        for name, order in orders.items():
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens[name]}"}) as c:
                task = c.get("/api/projects/1/next").json()["assignment"]
                assert task["item"]["prompt"] == HOT_PROMPT
                ids = {comp["text"]: comp["id"] for comp in task["item"]["completions"]}
                body = {"ranking": [ids[t] for t in order]}
                r = c.post(f"/api/assignments/{task['assignment_id']}/judgement", json=body)
                assert r.status_code == 201
        report = httpx.get(url + "/api/admin/projects/1/agreement", headers={"Authorization": f"Bearer {ADMIN}"}).json()
        assert report["flagged"] == ["labeler3"]
        assert [a["score"] for a in report["labelers"]] == [1.0, 1.0, -1.0]
        admin_page = httpx.get(url + "/admin/projects/1", cookies={"rlhf_admin": ADMIN}).text
        assert "flagged" in admin_page
    summary = export_pairs(hot_db, "hot", ExportConfig(), tmp_path)
    pairs = read_pairs(tmp_path / "pairs.jsonl")
    assert summary.pairs == len(pairs) == 3
    assert [(p.chosen, p.rejected) for p in pairs] == [(AIRCON, NOTHING), (AIRCON, NOT_HOT), (NOTHING, NOT_HOT)]
    assert summary.flagged_labelers == ("labeler3",)


# The HTTP concurrency and kill -9 guarantees, on SQLite with one and two uvicorn workers, and on PostgreSQL with two.
SERVERS = pytest.mark.parametrize(
    "backend, workers", [("sqlite", 1), ("sqlite", 2), ("postgres", 2)],
    ids=["sqlite-1worker", "sqlite-2workers", "postgres-2workers"],
)


@pytest.fixture()
def store_url(request, backend, db_path) -> str:
    """What `rlhf serve --db` gets: a SQLite file, or a fresh database on the session's PostgreSQL."""
    return str(db_path) if backend == "sqlite" else request.getfixturevalue("pg_url")


def _labeler_loop(url: str, token: str, barrier: threading.Barrier, acked: list, errors: list) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        barrier.wait()
        last = None
        while True:
            task = c.get("/api/projects/1/next").json()["assignment"]
            if task is None:
                break
            ids = [comp["id"] for comp in task["item"]["completions"]]
            last = (f"/api/assignments/{task['assignment_id']}/judgement", {"ranking": ids[::-1]})
            r = c.post(last[0], json=last[1])
            if r.status_code != 201:
                errors.append(r.text)
                return
            acked.append(task["assignment_id"])
        if last:  # a client retrying its last submission must not create a second judgement
            r = c.post(last[0], json=last[1])
            if r.status_code != 200 or not r.json()["duplicate"]:
                errors.append(f"retry: {r.status_code} {r.text}")


def _assert_k_each_exactly_once(db, n_items: int, k: int, acked: set[int]) -> None:
    with db.read() as s:
        assert store.count_rows(s)["judgements"] == n_items * k
        per_item = s.execute(text("SELECT item_id, COUNT(*) FROM assignments GROUP BY item_id")).all()
        assert len(per_item) == n_items and {n for _, n in per_item} == {k}
        assert s.execute(text(f"SELECT COUNT(*) FROM items WHERE n_assigned != {k}")).scalar() == 0
        assert store.done_assignments_without_judgement(s) == 0
        stored = set(s.execute(text("SELECT assignment_id FROM judgements")).scalars())
    assert acked <= stored


@SERVERS
def test_concurrent_labelers_lose_and_double_nothing(store_url, workers):
    n_items, k, n_labelers = 30, 3, 24
    db = open_database(store_url)
    import_generations(db, generations(n_items), "load", labelers_per_item=k)
    tokens = add_labelers(db, [f"c{i:02d}" for i in range(n_labelers)])
    acked: list[int] = []
    errors: list[str] = []
    barrier = threading.Barrier(n_labelers)
    with serve_process(store_url, workers) as (url, _):
        threads = [
            threading.Thread(target=_labeler_loop, args=(url, t, barrier, acked, errors)) for t in tokens.values()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
    assert not errors
    assert len(acked) == len(set(acked)) == n_items * k
    _assert_k_each_exactly_once(db, n_items, k, set(acked))
    db.close()


def _until_stopped(url: str, token: str, stop: threading.Event, acked: list) -> None:
    """Label until told to stop, through server crashes: a request that fails in transit is not acknowledged."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
        while not stop.is_set():
            try:
                task = c.get("/api/projects/1/next").json()["assignment"]
                if task is None:
                    return
                ids = [comp["id"] for comp in task["item"]["completions"]]
                r = c.post(f"/api/assignments/{task['assignment_id']}/judgement", json={"ranking": ids})
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            if r.status_code in (200, 201):
                acked.append(task["assignment_id"])


def _wait_for(acked: list, n: int) -> None:
    deadline = time.monotonic() + 90
    while len(acked) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(acked) >= n, f"only {len(acked)} judgements acknowledged"


@SERVERS
def test_kill_9_loses_no_acknowledged_judgement(store_url, workers):
    n_items, k = 40, 2
    db = open_database(store_url)
    import_generations(db, generations(n_items), "kill", labelers_per_item=k)
    tokens = list(add_labelers(db, [f"k{i}" for i in range(4)]).values())
    acked: list[int] = []
    stop = threading.Event()
    with serve_process(store_url, workers) as (url, proc):
        threads = [threading.Thread(target=_until_stopped, args=(url, t, stop, acked)) for t in tokens]
        for t in threads:
            t.start()
        if workers > 1:  # one worker dies mid-load; the supervisor replaces it and the others keep serving
            _wait_for(acked, 10)
            os.kill(worker_pids(proc)[0], signal.SIGKILL)
        _wait_for(acked, 25)
        kill_all(proc)  # then the whole server, while the labelers are still submitting
        stop.set()
        for t in threads:
            t.join(timeout=30)
    with db.read() as s:
        stored = set(s.execute(text("SELECT assignment_id FROM judgements")).scalars())
        assert store.done_assignments_without_judgement(s) == 0
    lost = set(acked) - stored
    assert not lost, f"acknowledged judgements lost: {sorted(lost)}"
    with serve_process(store_url, workers) as (url, _):  # restart on the same store and finish the work
        stop.clear()
        for t in tokens:
            _until_stopped(url, t, stop, acked)
    _assert_k_each_exactly_once(db, n_items, k, set(acked))
    db.close()


def test_simulated_labelers_flag_the_bad_one(db, tmp_path):
    import_generations(db, generations(12, k=4), "sim", labelers_per_item=4)
    tokens = add_labelers(db, ["honest1", "honest2", "honest3", "bad"])
    labelers = [SimulatedLabeler(n, t, bad=(n == "bad")) for n, t in tokens.items()]
    gold = lambda texts: [len(t) for t in texts]  # noqa: E731  longer answer ("!" count) is better
    with serve_in_background(ServeConfig(port=0, admin_token=ADMIN), db) as url:
        summary = run_simulated_labelers(url, 1, labelers, gold, SimulationConfig(noise=0.3, seed=1))
    assert summary.errors == [] and summary.judgements == {n: 12 for n in tokens}
    report = agreement(db, "sim")
    assert report.flagged == ["bad"]
    scores = {a.labeler: a.score for a in report.labelers}
    assert min(scores[f"honest{i}"] for i in (1, 2, 3)) > 0.3 and scores["bad"] < 0
    export = export_pairs(db, "sim", ExportConfig(), tmp_path)
    assert export.items == 12 and export.pairs + export.dropped_ties == 12 * 6
