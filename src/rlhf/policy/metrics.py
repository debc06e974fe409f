"""Per-step metrics to metrics.jsonl (fsynced per line) and TensorBoard; resume-aware. `step_line` for progress bars."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rlhf.data import JsonlAppender, write_jsonl

# Keys that depend on wall-clock time; everything else is reproducible run to run.
TIMING_KEYS = ("time/", "tokens_per_s", "episodes_per_s")


def is_timing(key: str) -> bool:
    return key.startswith(TIMING_KEYS[0]) or key in TIMING_KEYS[1:]


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # strict JSON has no NaN/inf; the `nonfinite/*` keys say what happened
    return v


class MetricsLog:
    def __init__(self, out_dir: Path, resume_step: int = 0, tensorboard: bool = True):
        path = out_dir / "metrics.jsonl"
        if path.exists():  # drop steps after the checkpoint: they are about to be redone
            keep = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    break
                if rec.get("step", 0) <= resume_step:
                    keep.append(rec)
            write_jsonl(path, keep)
        self.jsonl = JsonlAppender(path)
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tb"), purge_step=resume_step + 1 if resume_step else None)

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.jsonl.records

    def log(self, metrics: dict[str, Any]) -> None:
        self.jsonl.append({k: _clean(v) for k, v in metrics.items()})
        if self.tb is not None:
            step = int(metrics["step"])
            for k, v in metrics.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)
            self.tb.flush()

    def close(self) -> None:
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()


def step_line(m: dict[str, Any]) -> str:
    """One short progress line for a step of any optimiser (CLI and demo progress bars)."""
    nan = float("nan")
    if "reward/raw_mean" in m:
        line = f"reward {m['reward/raw_mean']:.3f}  KL {m.get('kl/mean', nan):.2f}  beta {m.get('kl/beta', nan):.3f}"
    else:
        line = f"loss {m.get('loss', nan):.3f}  acc {m.get('rewards/accuracy', nan):.2f}  margin {m.get('rewards/margin', nan):.3f}"
    if "time/step" in m:
        line += f"  {m['time/step']:.1f} s/step"
    skipped = m.get("nonfinite/skipped_updates", 0)
    return line + (f"  [red]{skipped} non-finite updates skipped[/red]" if skipped else "")
