from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rlhf.cli._common import ConfigOpt, SetOpt, build_config, console, err_console, user_errors
from rlhf.cli.app import app
from rlhf.cli.evaluate import print_headline
from rlhf.demo import STAGES, DemoConfig, StageIncomplete, run_demo

TITLES = {
    "generate": "1. generate completions",
    "feedback": "2. judges + human feedback (simulated labelers over HTTP) + agreement + export",
    "reward": "3. train reward model",
    "ppo": "4. policy optimisation (KL to the reference)",
    "evaluate": "5. evaluate base vs aligned per split + verdict + report",
}


@app.command(rich_help_panel="0. End to end")
def demo(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out_dir: Annotated[Optional[str], typer.Option("--out", "-o", help="Run folder.")] = None,
    policy: Annotated[Optional[str], typer.Option(help="Policy to align.")] = None,
    reward_trunk: Annotated[Optional[str], typer.Option(help="Reward-model backbone.")] = None,
    stage: Annotated[Optional[str], typer.Option(help=f"Re-run one stage only: {', '.join(STAGES)}.")] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="Policy optimiser: ppo, rloo, grpo (against the reward model) or dpo (on the pairs).")] = None,
) -> None:
    """The whole RLHF loop on the default models, offline: generate -> label -> reward model -> PPO/RLOO/GRPO/DPO -> evaluate."""
    cfg = build_config(DemoConfig, config, set_, out_dir=out_dir, policy=policy, reward_trunk=reward_trunk, optimizer=optimizer)
    console.print(f"[bold]rlhf demo[/] -> {cfg.out_dir}   (policy {cfg.policy}, reward trunk {cfg.reward_trunk}, "
                  f"optimizer {cfg.optimizer})")
    cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[info]}")]
    with user_errors(), Progress(*cols, console=err_console) as progress:
        tasks: dict[str, int] = {}

        def on_stage(name: str, event: str) -> None:
            if event == "skip":
                progress.console.print(f"[dim]{name}: already done, skipped[/]")
            elif event == "start":
                tasks[name] = progress.add_task(TITLES[name], total=None, info="")
            elif event == "done":
                t = progress.tasks[tasks[name]]
                progress.update(tasks[name], total=t.total or 1, completed=t.total or 1, info="[green]done")

        def on_progress(name: str, done: int, total: int, info: str) -> None:
            if name in tasks:
                progress.update(tasks[name], completed=done, total=total, info=info)

        try:
            result = run_demo(cfg, on_stage, on_progress, only=stage)
        except StageIncomplete as e:
            err_console.print(f"[yellow]incomplete:[/yellow] {e}")
            raise typer.Exit(3) from None
    st = result.stages
    if "generate" in st and st["generate"].get("eos_rate") is not None:
        console.print(f"generate: {st['generate']['eos_rate']:.0%} of completions ended with EOS")
    if "feedback" in st:
        fb = st["feedback"]
        console.print(f"feedback: {fb['items']} items, {sum(fb['judgements'].values())} judgements, "
                      f"{fb['pairs']} pairs; flagged and excluded: {', '.join(fb['excluded']) or 'none'}")
    rm = st.get("reward", {})
    if rm.get("accuracy") is not None:
        ci = rm.get("accuracy_ci") or (float("nan"), float("nan"))
        console.print(f"reward model: test pairwise accuracy [bold]{rm['accuracy']:.1%}[/] (95% CI {ci[0]:.1%}-{ci[1]:.1%}, "
                      f"{rm['num_pairs']} pairs never used for training or checkpoint choice)")
    if "ppo" in st:
        console.print(f"policy optimiser [bold]{st['ppo'].get('optimizer', 'ppo')}[/]: {st['ppo']['steps']} steps, "
                      f"stopped by {st['ppo']['stop_reason']}")
    if result.summary:
        print_headline(result.summary)
    console.print(f"report: [bold]{result.report_path}[/]")
