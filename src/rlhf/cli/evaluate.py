from __future__ import annotations

from rlhf.cli.app import app  # noqa: F401  (commands for this stage register here)
