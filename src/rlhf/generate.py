"""`rlhf generate`: N sampled completions per prompt, resumable, written as JSONL."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from rlhf.config import save_config
from rlhf.data import JsonlAppender, read_prompts, resolve_prompts, write_json
from rlhf.generation import GenerationStats, SamplingConfig, generate_completions
from rlhf.models.registry import DEFAULT_POLICY, load_causal_lm
from rlhf.types import Generation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateConfig:
    model: str = DEFAULT_POLICY
    """Policy to sample from: an alias, a local folder or a hub id."""
    prompts: str = "helpful"
    """Prompt file (.jsonl/.csv/.parquet/datasets folder) or a built-in set: helpful, redteam."""
    split: str | None = "train"
    """Keep only prompts whose `split` field equals this (prompts without the field are kept); null = all."""
    limit: int | None = None
    """Use only the first N prompts (after the split filter)."""
    out_dir: str = "runs/generate"
    """Output folder: completions.jsonl, generate.yaml and generate_stats.json land here."""
    num_completions: int = 4
    """Completions sampled per prompt."""
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=64, temperature=0.8, top_p=0.95))
    """Sampling settings."""
    batch_size: int = 32
    """Sequences per forward pass (prompts per batch = batch_size // num_completions)."""
    seed: int = 0
    """Random seed; each batch derives its seed from it and its prompt ids."""
    max_prompt_tokens: int = 512
    """Prompts longer than this keep their last tokens."""
    system_prompt: str | None = None
    """Optional system message for the chat template."""
    alt_completions: int = 0
    """The last N of each prompt's completions are sampled under `alt_system_prompt` instead: a second policy widens
    what labelers rank, as red-team data is gathered from several models (Ganguli et al. 2022, arXiv 2209.07858)."""
    alt_system_prompt: str | None = None
    """System message for those completions (null = none); `metadata.alt_system` marks them."""
    threads: int | None = None
    """torch CPU threads (null = torch's default)."""

    def __post_init__(self) -> None:
        if self.num_completions < 1:
            raise ValueError("num_completions must be >= 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not 0 <= self.alt_completions < self.num_completions:
            raise ValueError(f"alt_completions must be in [0, num_completions - 1], got {self.alt_completions}")

    def slot_systems(self) -> tuple[str | None, ...] | None:
        """The system message of each completion slot, or None when all share `system_prompt`."""
        if not self.alt_completions:
            return None
        if self.alt_system_prompt == self.system_prompt:
            raise ValueError("alt_system_prompt equals system_prompt: the alt_completions would not differ")
        main = self.num_completions - self.alt_completions
        return (self.system_prompt,) * main + (self.alt_system_prompt,) * self.alt_completions


def run_generate(
    cfg: GenerateConfig,
    on_progress: Callable[[int, int], None] | None = None,
    model_and_tokenizer: tuple | None = None,
) -> GenerationStats:
    """Generate completions for every prompt not already in `out_dir/completions.jsonl`.

    `on_progress(done, total)` is called after each batch. Returns this run's stats.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    slots = cfg.slot_systems()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "generate.yaml")
    prompts = read_prompts(resolve_prompts(cfg.prompts), split=cfg.split)
    if cfg.limit is not None:
        prompts = prompts[: cfg.limit]
    with JsonlAppender(out / "completions.jsonl") as log_file:
        done = {r["id"] for r in log_file.records}
        todo = [p for p in prompts if p.id not in done]
        total = len(prompts)
        if on_progress:
            on_progress(total - len(todo), total)
        if not todo:
            return GenerationStats()
        model, tok = model_and_tokenizer or load_causal_lm(cfg.model)

        def write(records: list[Generation], stats: GenerationStats) -> None:
            for r in records:
                log_file.append(r.to_dict() | {"model": cfg.model})
            if on_progress:
                on_progress(total - len(todo) + stats.prompts, total)

        stats = generate_completions(
            model, tok, todo, cfg.sampling, cfg.num_completions, cfg.batch_size, cfg.seed,
            cfg.max_prompt_tokens, cfg.system_prompt, on_batch=write, slot_systems=slots,
        )
    write_json(out / "generate_stats.json", dataclasses.asdict(stats) | {"tokens_per_s": stats.tokens_per_s})
    return stats
