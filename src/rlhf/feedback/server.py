"""Running the app under uvicorn: in the foreground (`rlhf serve`) or in a background thread (demos, tests)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Iterator

import uvicorn

from rlhf.feedback.config import ServeConfig
from rlhf.feedback.db import Database
from rlhf.feedback.web.app import create_app


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(cfg: ServeConfig) -> None:
    """Serve the labeling app until interrupted."""
    app = create_app(cfg)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level, timeout_graceful_shutdown=5)


@contextlib.contextmanager
def serve_in_background(cfg: ServeConfig = ServeConfig(port=0), db: Database | None = None) -> Iterator[str]:
    """Run the app on `cfg.host` in a daemon thread; yields its base URL (`http://127.0.0.1:PORT`).

    `cfg.port=0` picks a free port (the socket is bound before the thread starts, so there is no race).
    The server stops when the block ends.
    """
    app = create_app(cfg, db)
    sock = _bind(cfg.host, cfg.port)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=cfg.log_level, timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="rlhf-feedback-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the feedback server did not start (see the log above)")
        time.sleep(0.02)
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
