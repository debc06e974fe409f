import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
# Allocate and touch 64 MB, free it, and print how much of it left the process's resident set.
SCRIPT = """
import os, torch
from rlhf.cpu import keep_freed_memory
def rss_mb(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
kept = keep_freed_memory()
x = torch.ones(64 * 2**18)
held = rss_mb()
del x
print(kept, held - rss_mb())
"""


def released_mb(env: dict[str, str]) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=os.environ | {"PYTHONPATH": str(SRC)} | env,
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], float(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_tensors_stay_in_the_heap_for_reuse_unless_turned_off():
    kept, released = released_mb({"RLHF_KEEP_FREED_MEMORY": "1"})
    assert kept == "True" and released < 8  # the 64 MB stay mapped for the next allocation
    kept, released = released_mb({"RLHF_KEEP_FREED_MEMORY": "0"})
    assert kept == "False" and released > 56  # glibc's default: a large block goes back to the OS when freed
