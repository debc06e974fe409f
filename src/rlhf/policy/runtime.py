"""The process seam of the policy optimisers; it lives in `rlhf.distributed` (shared with the reward trainer)."""

from rlhf.distributed import AccelerateRuntime, Runtime, make_runtime

__all__ = ["AccelerateRuntime", "Runtime", "make_runtime"]
