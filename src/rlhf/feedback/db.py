"""Engine and sessions: SQLite (WAL, foreign keys, write-locking transactions) by default, PostgreSQL by URL.

Opening a database runs the Alembic migrations up to `head`, so a fresh file and an old one both end
up on the current schema.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def database_url(db: str | Path) -> str:
    """A SQLAlchemy URL from a URL (`postgresql+psycopg://...`) or a SQLite file path."""
    s = str(db)
    if "://" in s:
        return s
    path = Path(s).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _configure_sqlite(engine: Engine, busy_timeout_s: float, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # noqa: ANN001
        # We issue BEGIN ourselves (below); pysqlite's implicit, deferred BEGIN can fail with
        # SQLITE_BUSY instead of waiting when a read transaction later needs to write.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # noqa: ANN001
        # Take the write lock up front: transactions queue on busy_timeout instead of deadlocking.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, busy_timeout_s: float = 30.0, synchronous: str = "FULL", pool_size: int = 20) -> Engine:
    """An engine for `url`; SQLite files get WAL, foreign keys, busy_timeout and `synchronous`."""
    if url.startswith("sqlite"):
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        engine = create_engine(
            url, connect_args={"timeout": busy_timeout_s, "check_same_thread": False},
            pool_size=pool_size, max_overflow=pool_size, pool_timeout=busy_timeout_s,
        )
        _configure_sqlite(engine, busy_timeout_s, synchronous.upper())
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


@dataclass
class Database:
    """An engine plus its session factory. Each `session()` block is one transaction."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    busy_timeout_s: float = 30.0
    _lock: threading.Lock | None = field(default=None, repr=False)

    @contextlib.contextmanager
    def serialized(self) -> Iterator[None]:
        """SQLite: queue this process's transactions on a lock (one writer at a time anyway).

        Without it, waiting threads poll SQLite's busy handler with growing sleeps, which starves some
        requests for seconds under load. Other processes still wait on busy_timeout. No-op elsewhere.
        """
        if self._lock is None:
            yield
            return
        if not self._lock.acquire(timeout=self.busy_timeout_s):
            raise TimeoutError(f"feedback store busy for {self.busy_timeout_s:.0f} s")
        try:
            yield
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self.serialized(), self.sessions.begin() as s:
            yield s

    def close(self) -> None:
        self.engine.dispose()


def open_database(
    db: str | Path, *, migrate: bool = True, busy_timeout_s: float = 30.0, synchronous: str = "FULL"
) -> Database:
    """Open (and by default migrate to `head`) the feedback store at a SQLite path or database URL."""
    url = database_url(db)
    engine = make_engine(url, busy_timeout_s=busy_timeout_s, synchronous=synchronous)
    if migrate:
        from rlhf.feedback.migrations import upgrade

        upgrade(engine)
    lock = threading.Lock() if url.startswith("sqlite") else None
    return Database(url, engine, sessionmaker(engine, expire_on_commit=False), busy_timeout_s, lock)
