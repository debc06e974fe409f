"""Labeling server throughput: judgements/s and p50/p99 latency of "get next item, submit ranking"
with 32 concurrent clients against a real uvicorn process on loopback (SQLite store), plus one client alone.

    flock /tmp/rlhf-bench.lock .venv/bin/python bench/feedback_server.py [--clients 32] [--items 400] [--seconds 40]

No peer figure: Label Studio (the usual peer) cannot be installed offline here, so only our figures print.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _machine import machine

from rlhf.feedback import add_labelers, import_generations, open_database
from rlhf.types import Generation

ADMIN = "bench-admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def labeler(
    url: str, token: str, project: int, deadline: float, cycles: list[float], nexts: list[float], posts: list[float]
) -> int:
    done = 0
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            r = await c.get(f"/api/projects/{project}/next")
            r.raise_for_status()
            task = r.json()["assignment"]
            t1 = time.perf_counter()
            if task is None:
                break
            ids = [comp["id"] for comp in task["item"]["completions"]]
            r = await c.post(f"/api/assignments/{task['assignment_id']}/judgement", json={"ranking": ids[::-1]})
            if r.status_code != 201:
                raise RuntimeError(f"submit failed: {r.status_code} {r.text}")
            t2 = time.perf_counter()
            nexts.append(t1 - t0)
            posts.append(t2 - t1)
            cycles.append(t2 - t0)
            done += 1
    return done


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] * 1000 if len(xs) > 1 else xs[0] * 1000


async def drive(url: str, tokens: list[str], seconds: float) -> tuple[int, float, list, list, list]:
    cycles: list[float] = []
    nexts: list[float] = []
    posts: list[float] = []
    t0 = time.perf_counter()
    counts = await asyncio.gather(*(labeler(url, t, 1, t0 + seconds, cycles, nexts, posts) for t in tokens))
    return sum(counts), time.perf_counter() - t0, cycles, nexts, posts


def start_server(db_path: Path, synchronous: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = os.environ | {
        "RLHF_FEEDBACK_DB": str(db_path), "RLHF_ADMIN_TOKEN": ADMIN, "RLHF_SQLITE_SYNCHRONOUS": synchronous,
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "rlhf.feedback.web.app:create_app_from_env",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"], env=env,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("server did not start")


def run(args: argparse.Namespace, clients: int, synchronous: str, seconds: float) -> dict:
    """A fresh store, `clients` labelers looping next+submit until the items run out or `seconds` pass."""
    tmp = Path(tempfile.mkdtemp(prefix="rlhf-bench-feedback-"))
    db_path = tmp / "feedback.db"
    db = open_database(db_path)
    gens = [Generation(f"b{i}", f"Prompt number {i}: how do I stay cool in summer?",
                       tuple(f"Completion {j} for prompt {i}. " * 8 for j in range(args.completions)))
            for i in range(args.items)]
    import_generations(db, gens, "bench", labelers_per_item=args.k)
    tokens = list(add_labelers(db, [f"bench{i:03d}" for i in range(clients)]).values())
    db.close()
    server, url = start_server(db_path, synchronous)
    try:
        n, wall, cycles, nexts, posts = asyncio.run(drive(url, tokens, seconds))
    finally:
        server.terminate()
        server.wait(10)
    stored = sqlite3.connect(db_path).execute("SELECT COUNT(*) FROM judgements").fetchone()[0]
    if stored != n:
        raise SystemExit(f"lost or doubled judgements: {stored} stored, {n} acknowledged")
    return {"n": n, "wall": wall, "cycles": cycles, "nexts": nexts, "posts": posts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--completions", type=int, default=4)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=40.0, help="Upper bound on each timed run.")
    args = ap.parse_args()

    rows = [
        (f"ours, {args.clients} clients, FULL", run(args, args.clients, "FULL", args.seconds)),
        (f"ours, {args.clients} clients, NORMAL", run(args, args.clients, "NORMAL", args.seconds)),
        ("ours, 1 client, FULL", run(args, 1, "FULL", min(args.seconds, 10.0))),
    ]
    print(f"machine: {machine(f'Python {platform.python_version()}', f'SQLite {sqlite3.sqlite_version}', f'{platform.system()} {platform.release()}')}")
    print(f"setup:   1 uvicorn worker, SQLite WAL (synchronous FULL = fsync per commit, the default; NORMAL survives "
          f"kill -9 but not power loss), httpx asyncio clients on loopback, {args.items} items x {args.completions} "
          f"completions, k={args.k}; each row a fresh store; every acknowledged judgement stored exactly once")
    print(f"{'system':<30}{'judgements':>11}{'wall s':>8}{'judg/s':>9}{'cycle p50 ms':>14}{'cycle p99 ms':>14}"
          f"{'next p50':>10}{'submit p50':>12}")
    for name, r in rows:
        print(f"{name:<30}{r['n']:>11}{r['wall']:>8.1f}{r['n'] / r['wall']:>9.1f}"
              f"{pct(r['cycles'], 50):>14.1f}{pct(r['cycles'], 99):>14.1f}{pct(r['nexts'], 50):>10.1f}"
              f"{pct(r['posts'], 50):>12.1f}")
    print(f"{'Label Studio (peer)':<30}n/a: not installable offline on this machine")


if __name__ == "__main__":
    main()
