"""Labeling server throughput: judgements/s and p50/p99 latency of "get next item, submit ranking"
with 32 concurrent clients against a real uvicorn process on loopback (SQLite store, fsync per commit).

    flock /tmp/rlhf-bench.lock .venv/bin/python bench/feedback_server.py [--clients 32] [--items 400] [--seconds 60]

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

from rlhf.feedback import add_labelers, import_generations, open_database
from rlhf.types import Generation

ADMIN = "bench-admin"


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"{platform.system()} {platform.release()}")


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--completions", type=int, default=4)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60.0, help="Upper bound on the timed run.")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="rlhf-bench-feedback-"))
    db_path = tmp / "feedback.db"
    db = open_database(db_path)
    gens = [Generation(f"b{i}", f"Prompt number {i}: how do I stay cool in summer?",
                       tuple(f"Completion {j} for prompt {i}. " * 8 for j in range(args.completions)))
            for i in range(args.items)]
    import_generations(db, gens, "bench", labelers_per_item=args.k)
    tokens = list(add_labelers(db, [f"bench{i:03d}" for i in range(args.clients)]).values())
    db.close()

    port = free_port()
    env = os.environ | {"RLHF_FEEDBACK_DB": str(db_path), "RLHF_ADMIN_TOKEN": ADMIN}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "rlhf.feedback.web.app:create_app_from_env",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"], env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        n, wall, cycles, nexts, posts = asyncio.run(drive(url, tokens, args.seconds))
    finally:
        server.terminate()
        server.wait(10)
    stored = sqlite3.connect(db_path).execute("SELECT COUNT(*) FROM judgements").fetchone()[0]

    print(f"machine: {machine()}")
    print(f"setup:   1 uvicorn worker, SQLite WAL synchronous=FULL, {args.clients} concurrent clients (httpx, asyncio) "
          f"on loopback, {args.items} items x {args.completions} completions, k={args.k}")
    print(f"{'system':<22}{'judgements':>11}{'wall s':>8}{'judg/s':>9}{'cycle p50 ms':>14}{'cycle p99 ms':>14}"
          f"{'next p50':>10}{'submit p50':>12}")
    print(f"{'rlhf feedback (ours)':<22}{n:>11}{wall:>8.1f}{n / wall:>9.1f}"
          f"{pct(cycles, 50):>14.1f}{pct(cycles, 99):>14.1f}{pct(nexts, 50):>10.1f}{pct(posts, 50):>12.1f}")
    print(f"{'Label Studio (peer)':<22}{'n/a: not installable offline on this machine':>60}")
    print(f"check: {stored} judgements stored for {n} acknowledged")
    if stored != n:
        raise SystemExit("lost or doubled judgements")


if __name__ == "__main__":
    main()
