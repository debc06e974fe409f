"""Against a real uvicorn on loopback: the design-notes example, 24 concurrent labelers, kill -9, simulated labelers."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
from feedback_helpers import ADMIN, AIRCON, HOT_PROMPT, NOT_HOT, NOTHING, generations, uvicorn_process
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
    with uvicorn_process(db_path) as (url, _):
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


def test_concurrent_labelers_lose_and_double_nothing(db, db_path):
    n_items, k, n_labelers = 30, 3, 24
    import_generations(db, generations(n_items), "load", labelers_per_item=k)
    tokens = add_labelers(db, [f"c{i:02d}" for i in range(n_labelers)])
    acked: list[int] = []
    errors: list[str] = []
    barrier = threading.Barrier(n_labelers)
    with uvicorn_process(db_path) as (url, _):
        threads = [
            threading.Thread(target=_labeler_loop, args=(url, t, barrier, acked, errors)) for t in tokens.values()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
    assert not errors
    assert len(acked) == len(set(acked)) == n_items * k
    with db.session() as s:
        assert store.count_rows(s)["judgements"] == n_items * k
        per_item = s.execute(text("SELECT item_id, COUNT(*) FROM assignments GROUP BY item_id")).all()
        assert len(per_item) == n_items and {n for _, n in per_item} == {k}
        assert s.execute(text("SELECT COUNT(*) FROM items WHERE n_assigned != 3")).scalar() == 0
        assert store.done_assignments_without_judgement(s) == 0
        stored = set(s.execute(text("SELECT assignment_id FROM judgements")).scalars())
    assert stored == set(acked)


def test_kill_9_loses_no_acknowledged_judgement(db, db_path):
    import_generations(db, generations(40), "kill", labelers_per_item=2)
    tokens = add_labelers(db, [f"k{i}" for i in range(4)])
    acked: list[tuple[int, list[int]]] = []
    stop = threading.Event()

    def worker(token: str) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
            while not stop.is_set():
                try:
                    task = c.get("/api/projects/1/next").json()["assignment"]
                    if task is None:
                        return
                    ids = [comp["id"] for comp in task["item"]["completions"]]
                    r = c.post(f"/api/assignments/{task['assignment_id']}/judgement", json={"ranking": ids})
                except httpx.TransportError:
                    return  # server killed mid-request: not acknowledged
                if r.status_code == 201:
                    acked.append((task["assignment_id"], ids))

    with uvicorn_process(db_path) as (url, proc):
        threads = [threading.Thread(target=worker, args=(t,)) for t in tokens.values()]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked) < 25 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # while the workers are still submitting
        proc.wait()
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert len(acked) >= 25
    with uvicorn_process(db_path) as (url, _):  # restart on the same file
        assert httpx.get(url + "/healthz").status_code == 200
    fresh = open_database(db_path)
    with fresh.session() as s:
        stored = dict(s.execute(text("SELECT assignment_id, ranking FROM judgements")).all())
        assert store.done_assignments_without_judgement(s) == 0
    fresh.close()
    for aid, ids in acked:
        assert aid in stored, f"acknowledged judgement for assignment {aid} was lost"
    assert len(stored) >= len(acked)


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
