"""Readers and writers for the project's record files.

Inputs: JSONL (the native format), JSON arrays, CSV, Parquet and HF `datasets` saved with
`save_to_disk`. Every error names the file and, for line-based formats, the line. Outputs are
written atomically (temp file + rename) so a crash never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TextIO

from rlhf.types import Generation, PreferencePair, Prompt

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Malformed input; the message starts with `file:line:` where a line is known."""


# --------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[TextIO]:
    """Write to a temp file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Atomically write records as JSON lines."""
    with atomic_write(path) as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    with atomic_write(path) as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
    return Path(path)


class JsonlAppender:
    """Append-only JSONL log for resumable stages: each record is flushed and fsynced.

    On open, a torn final line (a crash mid-write) is cut off, so resuming never reads it.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict[str, Any]] = []
        if self.path.exists():
            good = 0
            with open(self.path, "rb") as fh:
                for raw in fh:
                    if not raw.endswith(b"\n"):
                        break
                    try:
                        self.records.append(json.loads(raw))
                    except json.JSONDecodeError:
                        break
                    good += len(raw)
            if good != self.path.stat().st_size:
                with open(self.path, "r+b") as fh:
                    fh.truncate(good)
        self._fh = open(self.path, "a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.records.append(record)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- reading


def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    return rows


def _read_table(path: Path) -> list[tuple[int, Any]]:
    import pandas as pd

    try:
        if path.suffix == ".csv":
            df = pd.read_csv(path, keep_default_na=False)
            first_line = 2  # header is line 1
        else:
            df = pd.read_parquet(path)
            first_line = 1
    except Exception as e:  # pandas raises many types; all mean "cannot read this file"
        raise DataError(f"{path}: cannot read {path.suffix[1:]} file: {e}") from e
    return [(i + first_line, rec) for i, rec in enumerate(df.to_dict(orient="records"))]


def _read_hf_dataset(path: Path) -> list[tuple[int, Any]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DataError(f"{path}: not a dataset saved with save_to_disk: {e}") from e
    if isinstance(ds, datasets.DatasetDict):
        split = "train" if "train" in ds else next(iter(ds))
        ds = ds[split]
    return [(i + 1, dict(r)) for i, r in enumerate(ds)]


def read_records(path: str | Path, required: Sequence[str] = ()) -> list[tuple[int, dict[str, Any]]]:
    """Read a record file as `(line_or_row_number, record)` pairs, checking `required` string fields.

    Completions may be empty strings (a model can emit EOS at once); prompts may not.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        rows = _read_hf_dataset(path)
    elif path.suffix in (".jsonl", ".ndjson") or path.name.endswith(".jsonl.gz"):
        if path.suffix == ".gz":
            import gzip
            import io

            with gzip.open(path, "rt", encoding="utf-8") as fh:
                text = fh.read()
            rows = []
            for lineno, line in enumerate(io.StringIO(text), 1):
                if line.strip():
                    try:
                        rows.append((lineno, json.loads(line)))
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
        else:
            rows = _read_jsonl(path)
    elif path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON array of records")
        rows = [(i + 1, r) for i, r in enumerate(data)]
    elif path.suffix in (".csv", ".parquet"):
        rows = _read_table(path)
    else:
        raise DataError(f"{path}: unknown format {path.suffix!r}; use .jsonl, .json, .csv, .parquet or a datasets folder")
    if not rows:
        raise DataError(f"{path}: file is empty (no records)")
    for lineno, rec in rows:
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        for key in required:
            if key not in rec:
                raise DataError(f"{path}:{lineno}: missing field {key!r}")
            if not isinstance(rec[key], str):
                raise DataError(f"{path}:{lineno}: field {key!r} must be a string, got {type(rec[key]).__name__}")
            if key == "prompt" and not rec[key].strip():
                raise DataError(f"{path}:{lineno}: field 'prompt' is empty")
    return rows


def stable_id(text: str) -> str:
    """Content-derived id for records that come without one."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


HASH_EVAL_SHARE = 0.2
"""Share of prompts without a `split` field that `hash_split` puts in the eval split."""


def hash_split(prompt_id: str, eval_share: float = HASH_EVAL_SHARE) -> str:
    """'train' or 'eval' from a hash of the id: stable across runs and machines, and independent of file order."""
    h = int.from_bytes(hashlib.sha256(prompt_id.encode("utf-8")).digest()[:8], "little") / 2**64
    return "eval" if h < eval_share else "train"


def read_prompts(path: str | Path, split: str | None = None) -> list[Prompt]:
    """Read prompts (`prompt` field; optional `id`, `split`, `metadata`), optionally one split only.

    A prompt without a `split` field is put in `train` or `eval` by a hash of its id (`hash_split`), so
    the train and eval selections never share a prompt; a warning says how many were split that way.
    """
    path = Path(path)
    prompts, seen, hashed = [], {}, 0
    for lineno, rec in read_records(path, required=("prompt",)):
        pid = str(rec["id"]) if rec.get("id") not in (None, "") else stable_id(rec["prompt"])
        if pid in seen:
            raise DataError(f"{path}:{lineno}: duplicate id {pid!r} (first seen on line {seen[pid]})")
        seen[pid] = lineno
        rec_split = rec.get("split")
        if rec_split in (None, ""):
            rec_split, hashed = hash_split(pid), hashed + 1
        elif not isinstance(rec_split, str):
            raise DataError(f"{path}:{lineno}: field 'split' must be a string, got {type(rec_split).__name__}")
        if split is not None and rec_split != split:
            continue
        meta = dict(rec.get("metadata") or {}) | {"split": rec_split}
        prompts.append(Prompt(id=pid, prompt=rec["prompt"], metadata=meta))
    if hashed and split is not None:
        log.warning("%s: %d prompt(s) have no 'split' field; they were split by a hash of their id "
                    "(%.0f%% eval, the rest train)", path, hashed, 100 * HASH_EVAL_SHARE)
    if not prompts:
        raise DataError(f"{path}: no prompts" + (f" in split {split!r}" if split else ""))
    return prompts


def read_generations(path: str | Path) -> list[Generation]:
    """Read `rlhf generate` output: `prompt` plus a list of `completions` per line."""
    path = Path(path)
    out = []
    for lineno, rec in read_records(path, required=("prompt",)):
        comps = rec.get("completions")
        if not isinstance(comps, list) or not comps or not all(isinstance(c, str) for c in comps):
            raise DataError(f"{path}:{lineno}: field 'completions' must be a non-empty list of strings")
        meta = dict(rec.get("metadata") or {})
        fin = meta.get("finished")
        if fin is not None and (not isinstance(fin, list) or len(fin) != len(comps) or not all(isinstance(f, bool) for f in fin)):
            raise DataError(f"{path}:{lineno}: field 'metadata.finished' must be a list of {len(comps)} booleans, one per completion")
        pid = str(rec.get("id") or stable_id(rec["prompt"]))
        out.append(Generation(pid, rec["prompt"], tuple(comps), meta))
    return out


def read_pairs(path: str | Path) -> list[PreferencePair]:
    """Read preference pairs (`prompt`, `chosen`, `rejected`; optional `weight`)."""
    path = Path(path)
    pairs, identical = [], 0
    for lineno, rec in read_records(path, required=("prompt", "chosen", "rejected")):
        w = rec.get("weight", 1.0)
        if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0:
            raise DataError(f"{path}:{lineno}: field 'weight' must be a non-negative number")
        identical += rec["chosen"] == rec["rejected"]
        pairs.append(PreferencePair(rec["prompt"], rec["chosen"], rec["rejected"], float(w), dict(rec.get("metadata") or {})))
    if identical == len(pairs):
        raise DataError(f"{path}: 'chosen' equals 'rejected' in every pair; there is no preference to learn")
    return pairs


def read_texts(path: str | Path) -> list[tuple[str, str]]:
    """Read prompt/completion records (`prompt`, `completion`) for scoring."""
    return [(r["prompt"], r["completion"]) for _, r in read_records(path, required=("prompt", "completion"))]


BUILTIN_PROMPTS = ("helpful", "redteam")


def resolve_prompts(name: str | Path) -> Path:
    """A built-in prompt set name (`helpful`, `redteam`) or a path -> a file path."""
    if str(name) in BUILTIN_PROMPTS:
        return Path(__file__).parent / "prompts" / f"{name}.jsonl"
    return Path(name)
