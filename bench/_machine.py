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
