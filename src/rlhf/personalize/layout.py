"""The personal folder on disk, and the shared adapter's location and fingerprint.

    personal_dir/
      reward/                        shared part: trunk (HF folder) + basis + shared weights
        users/u<ID>.safetensors      a user's reward part (weights) + u<ID>.json (counts, normalisation)
      adapters/u<ID>/v<NNNN>/        one `rlhf ppo` run per version: adapter/ (peft) + checkpoint.pt, metrics
      .personalize.lock              held by a running `rlhf personalize`

Files are keyed by the user's id (`u<ID>`), never by name. Which adapter version is live is recorded in the
feedback store (`personal_adapters`), so publishing is one transaction and a deleted user cannot be published.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from rlhf.personalize.data import user_key

NO_SHARED = "none"
_USER_DIR = re.compile(r"^u(\d+)$")
_USER_FILE = re.compile(r"^u(\d+)\.(safetensors|json)$")


class Busy(RuntimeError):
    """Another `rlhf personalize` holds the personal folder."""


@dataclass(frozen=True)
class PersonalDir:
    root: Path

    @classmethod
    def at(cls, path: str | Path) -> "PersonalDir":
        return cls(Path(path))

    @property
    def reward(self) -> Path:
        return self.root / "reward"

    def reward_part(self, labeler_id: int) -> tuple[Path, Path]:
        """(weights .safetensors, metadata .json) of a user's reward part."""
        base = self.reward / "users" / user_key(labeler_id)
        return base.with_suffix(".safetensors"), base.with_suffix(".json")

    def adapters(self, labeler_id: int) -> Path:
        return self.root / "adapters" / user_key(labeler_id)

    def version_dir(self, labeler_id: int, version: int) -> Path:
        return self.adapters(labeler_id) / f"v{version:04d}"

    def versions(self, labeler_id: int) -> list[int]:
        d = self.adapters(labeler_id)
        return sorted(int(p.name[1:]) for p in d.glob("v[0-9]*") if p.is_dir()) if d.is_dir() else []

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock for one personalize run at a time (a second one raises Busy, it does not wait)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".personalize.lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Busy(f"{self.root}: another `rlhf personalize` is running") from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def user_files(self, labeler_id: int) -> list[Path]:
        """Every file that belongs to the user (reward part, adapters and their training state)."""
        files = [p for p in self.reward_part(labeler_id) if p.exists()]
        d = self.adapters(labeler_id)
        return files + (sorted(p for p in d.rglob("*") if p.is_file()) if d.is_dir() else [])

    def remove_user(self, labeler_id: int) -> list[Path]:
        """Delete the user's reward part and adapters; returns what was removed."""
        removed = self.user_files(labeler_id)
        for p in self.reward_part(labeler_id):
            p.unlink(missing_ok=True)
        shutil.rmtree(self.adapters(labeler_id), ignore_errors=True)
        return removed

    def prune_versions(self, labeler_id: int, keep: int, live: int | None) -> None:
        """Keep the newest `keep` adapter versions (and always the live one)."""
        for v in self.versions(labeler_id)[:-keep]:
            if v != live:
                shutil.rmtree(self.version_dir(labeler_id, v), ignore_errors=True)

    def remove_orphans(self, known_ids: Iterable[int]) -> list[int]:
        """Remove files of users no longer in the store (e.g. deleted while a run was writing them)."""
        known = set(known_ids)
        gone: set[int] = set()
        for d in (self.root / "adapters").glob("u*"):
            m = _USER_DIR.match(d.name)
            if m and int(m.group(1)) not in known:
                gone.add(int(m.group(1)))
        for f in (self.reward / "users").glob("u*"):
            m = _USER_FILE.match(f.name)
            if m and int(m.group(1)) not in known:
                gone.add(int(m.group(1)))
        for lid in gone:
            self.remove_user(lid)
        return sorted(gone)


def resolve_shared_adapter(path: str | Path | None) -> Path | None:
    """An `rlhf ppo` output folder (its adapter/) or a peft adapter folder; None when not configured."""
    if path is None or str(path) == "":
        return None
    p = Path(path)
    for cand in (p / "adapter", p):
        if (cand / "adapter_config.json").is_file():
            return cand
    raise FileNotFoundError(f"shared adapter {p}: no adapter_config.json in it or in {p / 'adapter'}")


def adapter_fingerprint(adapter_dir: Path | None) -> str:
    """Identifies the shared adapter a user's adapter was trained on top of ('none' = the plain base)."""
    if adapter_dir is None:
        return NO_SHARED
    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        f = adapter_dir / name
        if f.is_file():
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def atomic_replace_dir(src: Path, dst: Path) -> None:
    """Swap a finished folder into place; readers see the old or the new one, at worst missing for an instant."""
    old = dst.with_name(f".{dst.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)
