"""Shared by the feedback tests: the design-notes example and a real uvicorn server in a child process."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
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


@contextlib.contextmanager
def uvicorn_process(db_path: Path, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real uvicorn server in a child process on loopback; yields (base_url, process)."""
    port = port or free_port()
    env = os.environ | {"RLHF_FEEDBACK_DB": str(db_path), "RLHF_ADMIN_TOKEN": ADMIN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "rlhf.feedback.web.app:create_app_from_env",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in 60 s")
            time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stderr.close()
