"""Running the app under uvicorn: in the foreground (`rlhf serve`, one process or `workers` processes) or in a
background thread (demos, tests)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import threading
import time
from typing import Iterator

import uvicorn

from rlhf.config import to_dict
from rlhf.feedback.config import ServeConfig
from rlhf.feedback.db import Database, open_database
from rlhf.feedback.web.app import SERVE_CONFIG_ENV, create_app, resolve_admin_token


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def serve(cfg: ServeConfig) -> None:
    """Serve the labeling app until interrupted.

    With `cfg.workers > 1`, uvicorn's supervisor runs that many worker processes on one listening socket
    (and restarts any that dies). The store is migrated once here first, and every worker gets the same
    resolved config, admin token included, through the environment.
    """
    run = dict(host=cfg.host, port=cfg.port, log_level=cfg.log_level, timeout_graceful_shutdown=5)
    if cfg.workers == 1:
        uvicorn.run(create_app(cfg), **run)
        return
    cfg = dataclasses.replace(cfg, admin_token=resolve_admin_token(cfg))
    open_database(cfg.db, synchronous=cfg.synchronous, pool_size=1).close()
    with _environ({SERVE_CONFIG_ENV: json.dumps(to_dict(cfg))}):
        uvicorn.run(
            "rlhf.feedback.web.app:create_app_from_env", factory=True, workers=cfg.workers, access_log=False, **run
        )


@contextlib.contextmanager
def serve_in_background(cfg: ServeConfig = ServeConfig(port=0), db: Database | None = None) -> Iterator[str]:
    """Run the app on `cfg.host` in a daemon thread; yields its base URL (`http://127.0.0.1:PORT`).

    `cfg.port=0` picks a free port (the socket is bound before the thread starts, so there is no race).
    The server stops when the block ends. One process: for several workers, run `rlhf serve --workers N`.
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
