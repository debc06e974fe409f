from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from feedback_helpers import HOT  # noqa: E402
from pg_cluster import NoPostgres, fresh_database, local_cluster  # noqa: E402

from rlhf.feedback import import_generations, open_database  # noqa: E402


@pytest.fixture()
def db_path(tmp_path) -> Path:
    return tmp_path / "feedback.db"


@pytest.fixture()
def db(db_path):
    d = open_database(db_path)
    yield d
    d.close()


@pytest.fixture()
def hot_db(db):
    import_generations(db, [HOT], "hot", criterion="harmless and helpful", instructions="# Rank\nBest **first**.")
    return db


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server for the session: RLHF_TEST_POSTGRES_URL, else a throwaway local cluster (skip if none)."""
    pytest.importorskip("psycopg", reason="psycopg not installed (pip install 'rlhf[postgres]')")
    if url := os.environ.get("RLHF_TEST_POSTGRES_URL"):
        yield url
        return
    try:
        with local_cluster() as url:
            yield url
    except NoPostgres as e:
        pytest.skip(f"{e} and RLHF_TEST_POSTGRES_URL not set")


@pytest.fixture()
def pg_url(pg_server):
    """A fresh database per test on the session's PostgreSQL server."""
    with fresh_database(pg_server) as url:
        yield url
