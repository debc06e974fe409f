from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from rlhf.cli._common import ConfigOpt, SetOpt, build_config, console, progress_bar, user_errors
from rlhf.cli.app import app
from rlhf.evaluate.report import headline_rows, verdict
from rlhf.evaluate.run import EvaluateConfig, run_evaluate


def print_headline(summary: dict) -> None:
    v = verdict(summary)
    color = {"good": "green", "bad": "red", "warn": "yellow"}[v["status"]]
    table = Table(title="base vs aligned", title_justify="left")
    for col in ("metric", "base", "aligned", "better"):
        table.add_column(col, justify="right" if col in ("base", "aligned") else "left")
    for row in headline_rows(summary):
        table.add_row(*row)
    console.print(table)
    console.print(f"[bold {color}]{v['title']}[/]: {v['text']}")
    hk = summary["reward_hacking"]
    console.print("reward-hacking check: " + ("[yellow]FLAGGED[/] " + "; ".join(hk["reasons"]) if hk["flagged"] else "[green]passed[/]"))


@app.command(rich_help_panel="5. Evaluate")
def evaluate(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    aligned: Annotated[Optional[str], typer.Option(help="rlhf ppo output folder, adapter folder or model.")] = None,
    base: Annotated[Optional[str], typer.Option(help="Base policy alias, folder or hub id.")] = None,
    prompts: Annotated[Optional[str], typer.Option(help="Eval prompt file or built-in set.")] = None,
    reward: Annotated[Optional[list[str]], typer.Option("--reward", help="Learned reward spec to report (repeatable).")] = None,
    judge: Annotated[Optional[str], typer.Option(help="Reward spec deciding the win rate.")] = None,
    out_dir: Annotated[Optional[str], typer.Option("--out", "-o", help="Output folder.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N prompts.")] = None,
) -> None:
    """Compare base and aligned policies: rewards, gold toxicity/sentiment, KL, win rate, hacking check, HTML report."""
    cfg = build_config(
        EvaluateConfig, config, set_, aligned=aligned, base=base, prompts=prompts, judge=judge,
        rewards=reward or None, out_dir=out_dir, limit=limit,
    )
    with user_errors(), progress_bar("evaluate") as update:
        result = run_evaluate(cfg, on_progress=lambda stage, d, t: update(d, t, info=stage))
    print_headline(result.summary)
    console.print(f"report: [bold]{result.report_path}[/]")
