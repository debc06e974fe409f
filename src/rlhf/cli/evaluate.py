from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from rlhf.cli._common import ConfigOpt, SetOpt, build_config, console, progress_bar, user_errors
from rlhf.cli.app import app
from rlhf.evaluate.report import split_rows, verdict
from rlhf.evaluate.run import EvaluateConfig, run_evaluate

STATUS_COLOR = {"aligned": "green", "inconclusive": "yellow", "regressed": "red"}
CHECK_COLOR = {"passed": "green", "flagged": "red", "failed": "red", "not run": "yellow"}


def print_headline(summary: dict) -> None:
    """Per split: the paired-difference table; then the verdict with its reasons and every hacking check."""
    for split, body in summary["splits"].items():
        table = Table(title=f"{split}: base vs aligned ({body['num_prompts']} prompts)", title_justify="left")
        for col in ("metric", "base", "aligned", "aligned - base [95% CI]", "relative", ""):
            table.add_column(col, justify="left" if col in ("metric", "") else "right")
        for row in split_rows(summary, split):
            table.add_row(*row)
        console.print(table)
    v = verdict(summary)
    color = STATUS_COLOR[v["status"]]
    console.print(f"[bold {color}]verdict: {v['status']}[/] {v['text']}")
    for r in v["reasons"]:
        console.print(f"  - {r}")
    hk = summary["reward_hacking"]
    console.print(f"reward-hacking check: [{CHECK_COLOR.get(hk['status'], 'yellow')}]{hk['status']}[/]")
    for c in hk["checks"]:
        console.print(f"  - {c['name']}: [{CHECK_COLOR[c['status']]}]{c['status']}[/] ({c['detail']})")


@app.command(rich_help_panel="5. Evaluate")
def evaluate(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    aligned: Annotated[Optional[str], typer.Option(help="Training run folder, adapter folder or model.")] = None,
    base: Annotated[Optional[str], typer.Option(help="Base policy (default: the run's own base).")] = None,
    prompts: Annotated[Optional[list[str]], typer.Option("--prompts", help="Prompt set or file, one split each (repeatable).")] = None,
    reward: Annotated[Optional[list[str]], typer.Option("--reward", help="Learned reward spec to report (repeatable).")] = None,
    judge: Annotated[Optional[str], typer.Option(help="Reward spec deciding the win rate.")] = None,
    out_dir: Annotated[Optional[str], typer.Option("--out", "-o", help="Output folder.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N prompts of each set.")] = None,
) -> None:
    """Compare base and aligned per prompt split: gold toxicity, relevance, fluency, learned rewards, KL, shape;
    paired CIs, a hacking check and a verdict (aligned / inconclusive / regressed); HTML report."""
    cfg = build_config(
        EvaluateConfig, config, set_, aligned=aligned, base=base, prompts=tuple(prompts) if prompts else None,
        judge=judge, rewards=reward or None, out_dir=out_dir, limit=limit,
    )
    with user_errors(), progress_bar("evaluate") as update:
        result = run_evaluate(cfg, on_progress=lambda stage, d, t: update(d, t, info=stage))
    print_headline(result.summary)
    console.print(f"report: [bold]{result.report_path}[/]")
