"""A throwaway local PostgreSQL cluster (Debian's `postgresql` package), for the tests and bench/feedback_server.py."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from typing import Iterator

from sqlalchemy import create_engine


class NoPostgres(RuntimeError):
    """PostgreSQL is not installed, or the cluster would not start."""


def _as_postgres(cmd: list[str]) -> list[str]:
    return (["runuser", "-u", "postgres", "--"] + cmd) if os.geteuid() == 0 else cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_cluster(fsync: bool = False, max_connections: int = 200) -> Iterator[str]:
    """initdb + pg_ctl start on a free loopback port; yields the server URL (database `postgres`).

    `fsync=False` for tests (fast, not crash-safe); benches use `fsync=True`, PostgreSQL's default.
    """
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        raise NoPostgres("PostgreSQL not installed (apt-get install postgresql)")
    bindir = os.path.dirname(bins[-1])
    root = tempfile.mkdtemp(prefix="rlhf-pg-")
    os.chmod(root, 0o777)
    data, port = os.path.join(root, "data"), _free_port()
    fsync_ = "on" if fsync else "off"
    options = f"-h 127.0.0.1 -p {port} -k {root} -c max_connections={max_connections} -c fsync={fsync_}"
    initdb = [f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"]
    start = [f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(root, "log"), "-w", "-t", "60", "-o", options, "start"]
    try:
        try:
            subprocess.run(_as_postgres(initdb), check=True, capture_output=True)
            subprocess.run(_as_postgres(start), check=True, capture_output=True)
        except subprocess.CalledProcessError as e:
            raise NoPostgres(f"could not start a local PostgreSQL: {e.stderr.decode()[-300:]}") from None
        except OSError as e:  # e.g. no runuser / postgres user
            raise NoPostgres(f"could not start a local PostgreSQL: {e}") from None
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server for the block; yields its URL and drops it afterwards."""
    name = "rlhf_" + uuid.uuid4().hex[:10]
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()
