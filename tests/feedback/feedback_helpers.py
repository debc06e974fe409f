"""Shared by the feedback tests: the design-notes example and `rlhf serve` (real uvicorn) in child processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx

from rlhf.types import Generation

ADMIN = "test-admin-token"

# The design notes' example (issue 3, "Done when").
HOT_PROMPT = "My house is too hot"
NOTHING = "There is nothing you can do about hot houses"
AIRCON = "You can cool your house with air conditioning"
NOT_HOT = "It is not too hot"
HOT = Generation("hot-house", HOT_PROMPT, (NOTHING, AIRCON, NOT_HOT))


def generations(n: int, k: int = 3) -> list[Generation]:
    return [Generation(f"p{i}", f"prompt {i}", tuple(f"answer {i}.{j}" + "!" * j for j in range(k))) for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What `rlhf serve --db DB --port P --workers N` runs, without importing the whole CLI (torch) first.
SERVE = (
    "import sys; from rlhf.feedback.config import ServeConfig; from rlhf.feedback.server import serve; "
    "serve(ServeConfig(db=sys.argv[1], port=int(sys.argv[2]), workers=int(sys.argv[3]), admin_token=sys.argv[4]))"
)


@contextlib.contextmanager
def serve_process(db: str | Path, workers: int = 1, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """`rlhf serve` with N workers (real uvicorn) in a child process group on loopback; yields (base_url, process).

    With workers > 1 the process is uvicorn's supervisor and the workers are its children (`worker_pids`).
    """
    port = port or free_port()
    log = tempfile.TemporaryFile()  # not a pipe: a chatty server must never block on a full one
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(db), str(port), str(workers), ADMIN],
        stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while len(worker_pids(proc)) < (workers if workers > 1 else 0) or not _healthy(url):
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"server exited: {log.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in 90 s")
            time.sleep(0.1)
        yield url, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            kill_all(proc)
        log.close()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def worker_pids(proc: subprocess.Popen) -> list[int]:
    try:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def kill_all(proc: subprocess.Popen) -> None:
    """kill -9 the server and all its workers at once (a crash of the whole machine's server)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
