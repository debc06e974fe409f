"""Transactions on SQLite: reads never wait for the writer, writers queue across processes instead of failing with
SQLITE_BUSY, claims commit without fsync; and the labeling loop's one-query store functions."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest
from feedback_helpers import generations
from sqlalchemy import text

from rlhf.feedback import add_labelers, import_generations, open_database, store
from rlhf.feedback.db import ReadOnlyTransaction
from rlhf.feedback.store import JudgementInput
from rlhf.feedback.tables import Assignment


def test_reads_see_a_snapshot_without_waiting_for_the_writer_and_cannot_write(db_path):
    db = open_database(db_path, busy_timeout_s=2)  # a read that queued behind the writer would fail in 2 s
    with db.session() as s:
        s.execute(text("CREATE TABLE t (x INTEGER)"))
        s.execute(text("INSERT INTO t VALUES (1)"))
    writing, read_done = threading.Event(), threading.Event()

    def writer() -> None:
        with db.session() as s:
            s.execute(text("INSERT INTO t VALUES (2)"))
            writing.set()
            read_done.wait(10)  # holds the write lock until the read below has finished

    t = threading.Thread(target=writer)
    t.start()
    writing.wait(10)
    with db.read() as s:
        assert s.execute(text("SELECT COUNT(*) FROM t")).scalar() == 1  # the snapshot before the open write
        with pytest.raises(ReadOnlyTransaction):
            s.execute(text("DELETE FROM t"))
    read_done.set()
    t.join(10)
    with db.read() as s:
        assert s.execute(text("SELECT COUNT(*) FROM t")).scalar() == 2
    db.close()


HOLDER = textwrap.dedent("""
    import sys, time
    from sqlalchemy import text
    from rlhf.feedback import open_database
    db = open_database(sys.argv[1], migrate=False)
    with db.session() as s:
        s.execute(text("INSERT INTO t VALUES ('other process')"))
        print("holding", flush=True)
        time.sleep(float(sys.argv[2]))
        if sys.argv[3] == "crash":
            import os, signal
            os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("end", ["commit", "crash"])
def test_a_writer_waits_for_another_process_instead_of_failing(db_path, end):
    """busy_timeout is 0.1 s and the other process holds the write lock for 1 s: SQLite alone would answer
    SQLITE_BUSY; the lock file queues this writer until the other commits, or dies (kill -9)."""
    db = open_database(db_path, busy_timeout_s=0.1)
    with db.session() as s:
        s.execute(text("CREATE TABLE t (who TEXT)"))
    other = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db_path), "1.0", end], stdout=subprocess.PIPE, text=True
    )
    assert other.stdout.readline().strip() == "holding"
    with db.session() as s:
        s.execute(text("INSERT INTO t VALUES ('this process')"))
    other.wait(30)
    with db.read() as s:
        rows = s.execute(text("SELECT who FROM t ORDER BY rowid")).scalars().all()
    assert rows == (["other process", "this process"] if end == "commit" else ["this process"])
    db.close()


def test_claims_skip_the_fsync_and_judgements_do_not(db):
    def synchronous(durable: bool) -> int:
        with db.session(durable=durable) as s:
            s.execute(text("SELECT 1"))
            return s.execute(text("PRAGMA synchronous")).scalar()

    assert [synchronous(False), synchronous(True), synchronous(False)] == [1, 2, 1]  # NORMAL, FULL, NORMAL


def test_loop_queries_agree_with_the_orm_ones(db):
    import_generations(db, generations(5), "p", labelers_per_item=2)
    add_labelers(db, ["a", "b", "c"])
    with db.session() as s:
        p = store.get_project(s, "p")
        labs = [store.get_labeler(s, name) for name in "abc"]
        for lab, judged, open_ in [(labs[0], 2, True), (labs[1], 1, False)]:  # c never starts
            for _ in range(judged):
                aid = store.claim_next(s, lab.id, p.id)
                ids = [c.id for c in store.assignment_view(s, lab.id, aid).item.completions]
                store.submit_judgement(s, lab, aid, JudgementInput(ranking=ids))
            if open_:
                store.claim_next(s, lab.id, p.id)
    with db.read() as s:
        p = store.get_project(s, "p")
        progress = store.labeler_progress(s, p, labs)
        assert any(x.done for x in progress) and any(x.pending for x in progress)
        for slow in progress:
            fast = store.own_progress(s, slow.labeler_id, p)
            assert (fast.done, fast.remaining) == (slow.done, slow.remaining)
        a = s.get(Assignment, 3)  # a's open one
        view = store.assignment_view(s, labs[0].id, 3)
        assert (view.id, view.project_id, view.status, view.item.external_id, view.item.prompt) == (
            a.id, a.project_id, a.status, a.item.external_id, a.item.prompt)
        assert [(c.id, c.position, c.text) for c in view.item.completions] == [
            (c.id, c.position, c.text) for c in a.item.completions]
        with pytest.raises(store.NotFound):
            store.assignment_view(s, labs[1].id, 3)  # not theirs
        with pytest.raises(store.NotFound):
            store.claim_next(s, labs[0].id, 99)
