"""Labeling server throughput: judgements/s and p50/p99 latency of "get next item, submit ranking" with 32
concurrent clients against `rlhf serve` (real uvicorn processes on loopback), 1 worker and N workers, on
SQLite (WAL, synchronous=FULL: fsync per commit) and on PostgreSQL (a local cluster this script starts,
fsync and synchronous_commit on: durable on acknowledgement too), printed side by side.

    flock /tmp/rlhf-bench.lock .venv/bin/python bench/feedback_server.py [--clients 32] [--workers 2] [--seconds 40]

The clients (httpx, asyncio, one process) share the machine's cores with the server, as in earlier runs.
No peer figure: Label Studio (the usual peer) cannot be installed offline here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx
from _machine import machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "feedback"))
from pg_cluster import NoPostgres, fresh_database, local_cluster  # noqa: E402

from rlhf.feedback import add_labelers, import_generations, open_database, store  # noqa: E402
from rlhf.types import Generation  # noqa: E402

ADMIN = "bench-admin"
SERVE = "import sys; from rlhf.cli import main; sys.argv[0] = 'rlhf'; main()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def labeler(url: str, token: str, deadline: float, cycles: list, nexts: list, posts: list) -> int:
    done = 0
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            r = await c.get("/api/projects/1/next")
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


def pct(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] * 1000 if len(xs) > 1 else xs[0] * 1000


async def drive(url: str, tokens: list[str], seconds: float) -> dict:
    cycles: list[float] = []
    nexts: list[float] = []
    posts: list[float] = []
    t0 = time.perf_counter()
    counts = await asyncio.gather(*(labeler(url, t, t0 + seconds, cycles, nexts, posts) for t in tokens))
    return {"n": sum(counts), "wall": time.perf_counter() - t0, "cycles": cycles, "nexts": nexts, "posts": posts}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its children (uvicorn workers), from /proc."""
    total = 0.0
    try:
        kids = [int(x) for x in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        kids = []
    for p in [pid, *kids]:
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@contextlib.contextmanager
def server(db: str, workers: int) -> Iterator[subprocess.Popen]:
    """`rlhf serve --workers N` in its own process group; stopped with SIGTERM (SIGKILL if it hangs)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, "serve", "--db", db, "--port", str(port), "--workers", str(workers)],
        env=os.environ | {"RLHF_ADMIN_TOKEN": ADMIN}, stdout=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1200):
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError("server did not start in 120 s")
        time.sleep(1.0 if workers > 1 else 0)  # let every worker finish starting
        proc.url = url  # type: ignore[attr-defined]
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run(args: argparse.Namespace, db_url: str, workers: int, clients: int | None = None) -> dict:
    """A fresh store, `clients` labelers looping next+submit until the items run out or `seconds` pass."""
    db = open_database(db_url)
    gens = [Generation(f"b{i}", f"Prompt number {i}: how do I stay cool in summer?",
                       tuple(f"Completion {j} for prompt {i}. " * 8 for j in range(args.completions)))
            for i in range(args.items)]
    import_generations(db, gens, "bench", labelers_per_item=args.k)
    tokens = list(add_labelers(db, [f"bench{i:03d}" for i in range(clients or args.clients)]).values())
    with server(db_url, workers) as proc:
        cpu0 = cpu_seconds(proc.pid)
        r = asyncio.run(drive(proc.url, tokens, args.seconds))
        r["cpu_ms"] = (cpu_seconds(proc.pid) - cpu0) * 1000 / max(r["n"], 1)
    with db.read() as s:
        stored = store.count_rows(s)["judgements"]
        orphans = store.done_assignments_without_judgement(s)
    db.close()
    if stored != r["n"] or orphans:
        raise SystemExit(f"lost or doubled judgements: {stored} stored, {r['n']} acknowledged, {orphans} orphans")
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2, help="N for the multi-worker rows.")
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--completions", type=int, default=4)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=40.0, help="Upper bound on each timed run.")
    ap.add_argument("--no-postgres", action="store_true", help="SQLite only.")
    args = ap.parse_args()

    results: dict[tuple[str, int], dict | str] = {}
    tmp = Path(tempfile.mkdtemp(prefix="rlhf-bench-feedback-"))
    for w in (1, args.workers):
        results["SQLite", w] = run(args, str(tmp / f"sqlite-{w}.db"), w)
    one = run(args, str(tmp / "sqlite-1client.db"), 1, clients=1)
    pg_version = "not run"
    if args.no_postgres:
        results["PostgreSQL", 1] = results["PostgreSQL", args.workers] = "not run (--no-postgres)"
    else:
        try:
            with local_cluster(fsync=True) as pg:
                with fresh_database(pg) as url:
                    db = open_database(url, migrate=False)
                    with db.read() as s:
                        pg_version = "PostgreSQL " + s.connection().exec_driver_sql("SHOW server_version").scalar()
                    db.close()
                for w in (1, args.workers):
                    with fresh_database(pg) as url:
                        results["PostgreSQL", w] = run(args, url, w)
        except NoPostgres as e:
            results["PostgreSQL", 1] = results["PostgreSQL", args.workers] = f"not run: {e}"

    versions = f"Python {platform.python_version()}", f"SQLite {sqlite3.sqlite_version}", pg_version
    print(f"machine: {machine(*versions, f'{platform.system()} {platform.release()}')}")
    print(f"setup:   {args.clients} httpx asyncio clients on loopback, each looping 'GET next item, POST ranking'; "
          f"{args.items} items x {args.completions} completions, k={args.k}; every run a fresh store; every "
          f"acknowledged judgement stored exactly once (checked). SQLite WAL synchronous=FULL; PostgreSQL fsync=on, "
          f"synchronous_commit=on")
    cols = f"{'judg/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
    print(f"{'':<22}{'SQLite':^24}  {'PostgreSQL':^24}")
    print(f"{'uvicorn workers':<22}{cols}  {cols}")
    for w in (1, args.workers):
        cells = []
        for backend in ("SQLite", "PostgreSQL"):
            r = results[backend, w]
            if isinstance(r, str):
                cells.append(f"{'n/a':>8}{'':>16}")
            else:
                cells.append(f"{r['n'] / r['wall']:>8.1f}{pct(r['cycles'], 50):>8.0f}{pct(r['cycles'], 99):>8.0f}")
        print(f"{w:<22}{cells[0]}  {cells[1]}")
    print("\ndetail (cycle = next + submit):")
    print(f"{'run':<26}{'judgements':>11}{'wall s':>8}{'judg/s':>9}{'cycle p50':>11}{'cycle p99':>11}"
          f"{'next p50':>10}{'next p99':>10}{'submit p50':>12}{'submit p99':>12}")
    for (backend, w), r in results.items():
        name = f"{backend}, {w} worker{'s' if w > 1 else ''}"
        if isinstance(r, str):
            print(f"{name:<26}{r}")
            continue
        print(f"{name:<26}{r['n']:>11}{r['wall']:>8.1f}{r['n'] / r['wall']:>9.1f}{pct(r['cycles'], 50):>11.1f}"
              f"{pct(r['cycles'], 99):>11.1f}{pct(r['nexts'], 50):>10.1f}{pct(r['nexts'], 99):>10.1f}"
              f"{pct(r['posts'], 50):>12.1f}{pct(r['posts'], 99):>12.1f}")
    print(f"{'SQLite, 1 worker, 1 client':<26}{one['n']:>11}{one['wall']:>8.1f}{one['n'] / one['wall']:>9.1f}"
          f"{pct(one['cycles'], 50):>11.1f}{pct(one['cycles'], 99):>11.1f}{pct(one['nexts'], 50):>10.1f}"
          f"{pct(one['nexts'], 99):>10.1f}{pct(one['posts'], 50):>12.1f}{pct(one['posts'], 99):>12.1f}")
    print("\nserver CPU per judgement (all server processes, from /proc; less sensitive to other load than the rates):")
    for (backend, w), r in [*results.items(), (("SQLite, 1 client", 1), one)]:
        if not isinstance(r, str):
            print(f"  {backend}, {w} worker{'s' if w > 1 else ''}: {r['cpu_ms']:.1f} ms")
    print(f"{'Label Studio (peer)':<26}n/a: not installable offline on this machine")


if __name__ == "__main__":
    main()
