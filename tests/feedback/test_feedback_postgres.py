"""The same store code on PostgreSQL: a throwaway local cluster (Debian's `postgresql`) or RLHF_TEST_POSTGRES_URL.

Skipped, with the reason, when neither PostgreSQL nor psycopg is available.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import threading
import uuid

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from feedback_helpers import AIRCON, HOT, NOT_HOT, NOTHING, free_port, generations
from sqlalchemy import create_engine, text

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

pytest.importorskip("psycopg", reason="psycopg not installed (pip install 'rlhf[postgres]')")


def _as_postgres(cmd: list[str]) -> list[str]:
    return (["runuser", "-u", "postgres", "--"] + cmd) if os.geteuid() == 0 else cmd


@contextlib.contextmanager
def _local_cluster():
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL not installed (apt-get install postgresql) and RLHF_TEST_POSTGRES_URL not set")
    bindir = os.path.dirname(bins[-1])
    root = tempfile.mkdtemp(prefix="rlhf-pg-")
    os.chmod(root, 0o777)
    data, port = os.path.join(root, "data"), free_port()
    try:
        subprocess.run(_as_postgres([f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
                       check=True, capture_output=True)
        subprocess.run(_as_postgres([
            f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(root, "log"), "-w", "-t", "60",
            "-o", f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200", "start",
        ]), check=True, capture_output=True)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    except subprocess.CalledProcessError as e:
        pytest.skip(f"could not start a local PostgreSQL: {e.stderr.decode()[-300:]}")
    except OSError as e:  # e.g. no runuser / postgres user
        pytest.skip(f"could not start a local PostgreSQL: {e}")
    finally:
        subprocess.run(_as_postgres([f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def server_url():
    if url := os.environ.get("RLHF_TEST_POSTGRES_URL"):
        yield url
        return
    with _local_cluster() as url:
        yield url


@pytest.fixture()
def pg(server_url):
    """A fresh database per test on the server."""
    name = "rlhf_" + uuid.uuid4().hex[:10]
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    url = server_url.rsplit("/", 1)[0] + "/" + name
    db = open_database(url)
    yield db
    db.close()
    with admin.connect() as c:
        c.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
    admin.dispose()


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
