"""Process-level CPU settings for training runs: torch threads, and glibc's allocator keeping freed memory."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

import torch

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc malloc.h
_NEVER = 2**31 - 1  # bytes: mallopt takes an int; above any single allocation a training step makes


def setup_cpu(threads: int | None) -> None:
    """What a training run sets for its process: torch's CPU threads (None = torch's default) and the allocator."""
    if threads:
        torch.set_num_threads(threads)
    keep_freed_memory()


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed blocks instead of returning them to the OS; True if it took effect.

    A CPU training step allocates tensors of several MB each (activations, logits, their gradients). glibc maps
    each one fresh from the OS and unmaps it when freed, so every allocation page-faults its memory in again:
    at the GPT-2-124M shape, elementwise ops ran about 3x slower than their arithmetic, and one RLOO step's
    training phase took 4.5 s instead of 2.4 s (docs/policy.md, "The shared core, faster"). Raising the mmap and
    trim thresholds keeps freed memory in the heap for the next step. The peak RSS grows a little (1-6% at that
    shape) and the process does not shrink after its peak, so long-lived servers do not call this. Linux with glibc only, once per process;
    RLHF_KEEP_FREED_MEMORY=0 turns it off.
    """
    if os.environ.get("RLHF_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _NEVER)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER))
