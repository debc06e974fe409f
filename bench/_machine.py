"""The machine line every bench prints, so figures can be compared across runs."""

from __future__ import annotations

import os
import platform


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(*extra: str) -> str:
    """'<CPU>, <n> cores' followed by what this bench adds (library versions, threads...)."""
    return ", ".join([f"{cpu_name()}, {os.cpu_count()} cores", *extra])


def run_worker(cmd: list[str], label: str) -> dict | None:
    """Run one bench worker in its own process (so peak RSS is its own) and parse its `RESULT {json}` line;
    print the outcome, and return None when it failed."""
    import json
    import subprocess
    import time

    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        print(f"  {label}: FAILED\n{proc.stderr[-3000:]}", flush=True)
        return None
    result = json.loads(line[7:])
    print(f"  ran {label} in {time.perf_counter() - t:.0f} s: {result}", flush=True)
    return result
