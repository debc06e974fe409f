"""`rlhf score`: add a `reward` field to every prompt/completion record, with any reward spec."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from rlhf.config import ConfigError
from rlhf.data import read_records, write_jsonl
from rlhf.reward.config import ScoreConfig
from rlhf.reward.functions import RewardFunction, load_reward_function


@dataclass(frozen=True)
class ScoreStats:
    records: int
    mean: float
    std: float
    seconds: float
    output: Path


def score_file(
    cfg: ScoreConfig,
    on_progress: Callable[[int, int], None] | None = None,
    reward_fn: RewardFunction | None = None,
) -> ScoreStats:
    """Score `cfg.input` in batches and write `cfg.output` (input records + `reward`)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rows = [rec for _, rec in read_records(cfg.input, required=("prompt", "completion"))]
    fn = reward_fn or load_reward_function(cfg.reward)
    if cfg.normalize and fn.normalization is None:
        raise ConfigError(f"normalize: reward {cfg.reward!r} has no saved normalisation statistics")
    t0 = time.perf_counter()
    rewards = torch.empty(len(rows))
    for start in range(0, len(rows), cfg.batch_size):
        chunk = rows[start : start + cfg.batch_size]
        rewards[start : start + len(chunk)] = fn([r["prompt"] for r in chunk], [r["completion"] for r in chunk])
        if on_progress:
            on_progress(start + len(chunk), len(rows))
    if cfg.normalize:
        mean, std = fn.normalization
        rewards = (rewards - mean) / max(std, 1e-8)
    write_jsonl(cfg.output, (r | {"reward": float(x)} for r, x in zip(rows, rewards)))
    return ScoreStats(
        len(rows), float(rewards.mean()), float(rewards.std()) if len(rows) > 1 else 0.0,
        time.perf_counter() - t0, Path(cfg.output),
    )
