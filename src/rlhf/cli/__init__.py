"""`rlhf` command line: one thin command per pipeline stage, each calling the library."""

from __future__ import annotations

from rlhf.cli.app import app, main

# Each module registers its stage's commands on `app`.
from rlhf.cli import demo, generate, feedback, reward, policy, evaluate, constitutional, personalize  # noqa: E402,F401

__all__ = ["app", "main"]
