from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from feedback_helpers import HOT  # noqa: E402

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


