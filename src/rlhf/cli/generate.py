from __future__ import annotations

from typing import Annotated, Optional

import typer

from rlhf.cli._common import ConfigOpt, SetOpt, build_config, console, progress_bar, user_errors
from rlhf.cli.app import app
from rlhf.generate import GenerateConfig, run_generate


@app.command(rich_help_panel="1. Generate")
def generate(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: Annotated[Optional[str], typer.Option(help="Policy alias, folder or hub id.")] = None,
    prompts: Annotated[Optional[str], typer.Option(help="Prompt file or built-in set (helpful, redteam).")] = None,
    out_dir: Annotated[Optional[str], typer.Option("--out", "-o", help="Output folder.")] = None,
    num_completions: Annotated[Optional[int], typer.Option("--n", help="Completions per prompt.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N prompts.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
) -> None:
    """Sample N completions per prompt (resumable: prompts already done are skipped)."""
    cfg = build_config(
        GenerateConfig, config, set_, model=model, prompts=prompts, out_dir=out_dir,
        num_completions=num_completions, limit=limit, seed=seed,
    )
    with user_errors(), progress_bar("generate (prompts)") as update:
        stats = run_generate(cfg, on_progress=lambda d, t: update(d, t))
    if stats.completions == 0:
        console.print(f"Nothing to do: every prompt already has completions in {cfg.out_dir}/completions.jsonl")
        return
    console.print(
        f"Generated {stats.completions} completions for {stats.prompts} prompts: "
        f"{stats.tokens} tokens in {stats.seconds:.1f} s = [bold]{stats.tokens_per_s:.1f} tokens/s[/bold] "
        f"-> {cfg.out_dir}/completions.jsonl"
    )
