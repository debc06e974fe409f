"""A pipeline run folder's record of finished stages (`stages.json`), shared by `rlhf demo` and the constitutional
chain: a finished stage is skipped on resume, and a resume under other settings is refused, naming each change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from rlhf.config import ConfigError, to_dict
from rlhf.data import write_json


class StageIncomplete(RuntimeError):
    """A stage stopped before its own rules said it was done (e.g. on a wall-clock limit); it is not recorded."""


StageCallback = Callable[[str, str], None]  # (stage, event: "start" | "skip" | "done")
ProgressCallback = Callable[[str, int, int, str], None]  # (stage, done, total, info)


class Stages:
    """stages.json: finished stages and their results, written atomically after each stage.

    Beside it, stage_settings.json keeps the settings each finished stage ran with, so that a resume with other
    settings is refused instead of mixing results made under two configs.
    """

    def __init__(self, path: Path):
        self.path = path
        self.settings_path = path.with_name("stage_settings.json")
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        self.settings: dict[str, Any] = json.loads(self.settings_path.read_text()) if self.settings_path.exists() else {}

    def done(self, name: str) -> bool:
        return name in self.data

    def check(self, settings: dict[str, Any], rerun: str | None = None) -> None:
        """Refuse when a finished stage ran with settings other than these. `settings` is in stage order; with
        `rerun`, only the stages before it are binding (it and later ones are re-run or checked when next resumed)."""
        changed = []
        for name, now in settings.items():
            if name == rerun:
                break
            if not self.done(name) or name not in self.settings:
                continue
            before = _flat(_portable(self.settings[name], self.path.parent))
            after = _flat(_portable(json.loads(json.dumps(to_dict(now))), self.path.parent))
            changed += [f"{name}: {k} {before.get(k, '(unset)')!r} -> {after.get(k, '(unset)')!r}"
                        for k in sorted(before.keys() | after.keys()) if before.get(k) != after.get(k)]
        if changed:
            raise ConfigError(
                f"{self.path.parent}: finished stages ran with other settings ({self.settings_path.name}):\n  "
                + "\n  ".join(changed) + "\nResume with the same settings, use another --out, or re-run the stage "
                "with --stage NAME (and the stages after it).")

    def finish(self, name: str, result: dict, settings: Any = None) -> None:
        self.data[name] = result
        if settings is not None:
            self.settings[name] = _portable(json.loads(json.dumps(to_dict(settings))), self.path.parent)
            write_json(self.settings_path, self.settings)
        write_json(self.path, self.data)


def _portable(d: Any, root: Path) -> Any:
    """Paths inside the run folder as "{run}/...", so that a moved or copied run folder still resumes."""
    if isinstance(d, dict):
        return {k: _portable(v, root) for k, v in d.items()}
    if isinstance(d, list):
        return [_portable(v, root) for v in d]
    if isinstance(d, str) and (d == str(root) or d.startswith(str(root) + "/")):
        return "{run}" + d[len(str(root)):]
    return d


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys -> leaf values; `threads` is left out (it changes speed, not results)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k != "threads":
            out |= _flat(v, f"{prefix}.{k}" if prefix else k)
    return out
