"""Engine and transactions: SQLite (WAL, foreign keys) by default, PostgreSQL by URL.

Two kinds of transaction, on both engines:

- `db.session()` may write. On SQLite it first takes the store's write lock (a thread lock, then an
  `flock` on `<db file>-writer.lock` shared by every process that opens the file through this module),
  then runs `BEGIN IMMEDIATE`, and gives the lock back when the transaction ends. Writers therefore
  queue in the kernel, across threads and worker processes, instead of polling SQLite's busy handler
  (which starves some for seconds under load), and never fail with SQLITE_BUSY or deadlock upgrading
  a read lock. Other programs on the file still wait on `busy_timeout`.
- `db.session(durable=False)` is a write transaction that does not wait for the disk (see there).
- `db.read()` is a read-only snapshot. On SQLite it is a deferred `BEGIN` in WAL mode: it neither
  waits for the writer nor blocks it. A statement that would write raises `ReadOnlyTransaction`.

On PostgreSQL both are ordinary transactions (MVCC); the row locks in the store package do the rest.
Opening a database runs the Alembic migrations up to `head` (unless `migrate=False`).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

try:
    import fcntl
except ImportError:  # Windows: one process per SQLite file (the thread lock still holds)
    fcntl = None  # type: ignore[assignment]

READ_ONLY = "rlhf_read_only"
"""Execution option that marks a connection's transactions read-only (`Database.read`)."""
RELAXED = "rlhf_relaxed"
"""Execution option for write transactions that commit without waiting for the disk (`session(durable=False)`)."""
_READS = re.compile(r"\s*(SELECT|WITH|VALUES|SHOW|EXPLAIN|PRAGMA|BEGIN|SAVEPOINT|RELEASE|ROLLBACK)\b", re.IGNORECASE)


class StoreBusy(TimeoutError):
    """No write slot within the busy timeout (another writer held the store that long)."""


class ReadOnlyTransaction(RuntimeError):
    """A statement that writes was sent inside `Database.read()`."""


def database_url(db: str | Path) -> str:
    """A SQLAlchemy URL from a URL (`postgresql+psycopg://...`) or a SQLite file path."""
    s = str(db)
    if "://" in s:
        return s
    path = Path(s).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


class WriteLock:
    """One SQLite writer at a time: a thread lock (with timeout) in this process, then a blocking `flock`
    on a lock file beside the database for the other processes. The kernel drops a killed process's flock."""

    def __init__(self, lock_file: Path | None, timeout_s: float):
        self.timeout_s = timeout_s
        self._thread = threading.Lock()
        self._fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644) if lock_file and fcntl else None

    def acquire(self) -> None:
        if not self._thread.acquire(timeout=self.timeout_s):
            raise StoreBusy(f"feedback store busy: no write slot within {self.timeout_s:.0f} s")
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._thread.release()
                raise

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Connection(sqlite3.Connection):
    """pysqlite connection that gives the write lock back as soon as its transaction has ended."""

    write_lock: WriteLock | None = None
    holds_lock = False
    synchronous = ""

    def _release(self) -> None:
        if self.holds_lock and not self.in_transaction:
            self.holds_lock = False
            self.write_lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._release()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._release()

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.holds_lock:
                self.holds_lock = False
                self.write_lock.release()


def _configure_sqlite(engine: Engine, lock: WriteLock, busy_timeout_s: float, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: _Connection, _record) -> None:  # noqa: ANN001
        # We issue BEGIN ourselves (below); pysqlite's implicit, deferred BEGIN can fail with
        # SQLITE_BUSY instead of waiting when a read transaction later needs to write.
        dbapi_conn.isolation_level = None
        dbapi_conn.write_lock = lock
        dbapi_conn.synchronous = synchronous
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # noqa: ANN001
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")  # a WAL snapshot: no lock taken, none waited for
            return
        dbapi_conn = conn.connection.dbapi_connection
        relaxed = conn.get_execution_options().get(RELAXED) and synchronous in ("FULL", "EXTRA")
        wanted = "NORMAL" if relaxed else synchronous
        if dbapi_conn.synchronous != wanted:  # settable between transactions only
            conn.exec_driver_sql(f"PRAGMA synchronous={wanted}")
            dbapi_conn.synchronous = wanted
        lock.acquire()
        dbapi_conn.holds_lock = True
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            dbapi_conn.holds_lock = False
            lock.release()
            raise


def _configure_postgres(engine: Engine) -> None:
    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # noqa: ANN001
        if conn.get_execution_options().get(RELAXED):
            conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")


def _guard_reads(engine: Engine) -> None:
    @event.listens_for(engine, "before_cursor_execute")
    def _read_only(conn, _cursor, statement: str, _params, _context, _many) -> None:  # noqa: ANN001
        if conn.get_execution_options().get(READ_ONLY) and not _READS.match(statement):
            raise ReadOnlyTransaction(f"write inside a read-only transaction: {statement.split(None, 1)[0]}")


def make_engine(
    url: str, busy_timeout_s: float = 30.0, synchronous: str = "FULL", pool_size: int = 20,
    write_lock: WriteLock | None = None,
) -> Engine:
    """An engine for `url`; SQLite files get WAL, foreign keys, busy_timeout, `synchronous` and the write lock."""
    if url.startswith("sqlite"):
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        engine = create_engine(
            url, connect_args={"timeout": busy_timeout_s, "check_same_thread": False, "factory": _Connection},
            pool_size=pool_size, max_overflow=0, pool_timeout=busy_timeout_s,
        )
        _configure_sqlite(engine, write_lock or WriteLock(None, busy_timeout_s), busy_timeout_s, synchronous.upper())
    else:
        engine = create_engine(
            url, pool_size=pool_size, max_overflow=0, pool_timeout=busy_timeout_s, pool_pre_ping=True
        )
        if engine.dialect.name == "postgresql":
            _configure_postgres(engine)
    _guard_reads(engine)
    return engine


@dataclass
class Database:
    """An engine plus its session factories: `session()` may write, `read()` is a read-only snapshot."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    relaxed_sessions: sessionmaker[Session]
    busy_timeout_s: float = 30.0
    _lock: WriteLock | None = field(default=None, repr=False)

    @contextlib.contextmanager
    def session(self, durable: bool = True) -> Iterator[Session]:
        """One transaction that may write: committed when the block ends, rolled back if it raises.

        `durable=False` commits without waiting for the disk (SQLite synchronous=NORMAL, PostgreSQL
        synchronous_commit=off): it survives a killed process, but a power cut can lose it, together with
        whatever was committed after it and not yet synced (the log is replayed in order, so the store stays
        consistent). For writes that may be lost on their own, such as claiming an item: the next durable
        commit, e.g. the judgement of that item, syncs it too.
        """
        with (self.sessions if durable else self.relaxed_sessions).begin() as s:
            yield s

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """One read-only transaction (a consistent snapshot), rolled back when the block ends."""
        with self.read_sessions() as s:
            yield s

    def close(self) -> None:
        self.engine.dispose()
        if self._lock is not None:
            self._lock.close()


def open_database(
    db: str | Path, *, migrate: bool = True, busy_timeout_s: float = 30.0, synchronous: str = "FULL",
    pool_size: int = 20,
) -> Database:
    """Open (and by default migrate to `head`) the feedback store at a SQLite path or database URL.

    `pool_size` caps this process's connections (PostgreSQL: keep processes x pool_size under max_connections).
    """
    url = database_url(db)
    lock = None
    if url.startswith("sqlite"):
        path = make_url(url).database
        file = Path(path) if path and path != ":memory:" and not path.startswith("file:") else None
        lock = WriteLock(file.with_name(file.name + "-writer.lock") if file else None, busy_timeout_s)
    engine = make_engine(url, busy_timeout_s, synchronous, pool_size, lock)
    if migrate:
        from rlhf.feedback.migrations import upgrade

        upgrade(engine)
    reader = engine.execution_options(**{READ_ONLY: True})
    relaxed = engine.execution_options(**{RELAXED: True})
    return Database(
        url, engine, sessionmaker(engine, expire_on_commit=False),
        sessionmaker(reader, expire_on_commit=False, autoflush=False), sessionmaker(relaxed, expire_on_commit=False),
        busy_timeout_s, lock,
    )
