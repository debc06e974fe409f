from __future__ import annotations

from typing import Annotated, Optional

import typer

from rlhf.cli._common import ConfigOpt, SetOpt, build_config, console, err_console, progress_bar, user_errors
from rlhf.cli.app import app
from rlhf.ppo import PPOConfig, train_ppo
from rlhf.reward.functions import load_reward_function


@app.command(rich_help_panel="4. PPO")
def ppo(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: Annotated[Optional[str], typer.Option(help="Policy alias, folder or hub id (also the frozen reference).")] = None,
    prompts: Annotated[Optional[str], typer.Option(help="Prompt file or built-in set (helpful, redteam).")] = None,
    reward: Annotated[Optional[str], typer.Option(help="Reward: rm:FOLDER (trained reward model), classifier:MODEL, scorer:toxicity or python:module:fn.")] = None,
    out_dir: Annotated[Optional[str], typer.Option("--out", "-o", help="Output folder.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Maximum PPO steps.")] = None,
    lora: Annotated[Optional[bool], typer.Option("--lora/--full", help="Train a LoRA adapter or all weights.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
) -> None:
    """Align a policy with PPO against a reward, with a KL penalty to the frozen reference (resumable)."""
    flags = {"lora.enabled": lora} if lora is not None else {}
    cfg = build_config(
        PPOConfig, config, set_, model=model, prompts=prompts, reward=reward, out_dir=out_dir, max_steps=steps,
        seed=seed, **flags,
    )
    try:
        reward_fn = load_reward_function(cfg.reward)
    except (ValueError, ImportError, AttributeError) as e:
        err_console.print(f"[red]error:[/red] reward {cfg.reward!r}: {e}")
        raise typer.Exit(2) from None
    with user_errors(), progress_bar("ppo (steps)", total=cfg.max_steps) as update:

        def on_step(m: dict) -> None:
            skipped = m["nonfinite/skipped_updates"]
            update(
                m["step"],
                info=f"reward {m['reward/raw_mean']:.3f}  KL {m['kl/mean']:.2f}  beta {m['kl/beta']:.3f}  "
                f"{m['time/step']:.1f} s/step" + (f"  [red]{skipped} non-finite updates skipped[/red]" if skipped else ""),
            )

        res = train_ppo(cfg, reward_fn, on_step=on_step)
    first = res.history[0] if res.history else {}
    final = res.final
    console.print(
        f"PPO stopped after {res.steps} steps ({res.stop_reason}): mean reward "
        f"{first.get('reward/raw_mean', float('nan')):.3f} -> [bold]{final.get('reward/raw_mean', float('nan')):.3f}[/bold], "
        f"KL {final.get('kl/mean', float('nan')):.2f} nats"
    )
    console.print(f"Policy -> {res.policy_dir}; value head, metrics.jsonl, tb/ and ppo.yaml -> {res.out_dir}")
    if not res.complete:
        err_console.print("[yellow]incomplete:[/yellow] stopped by time_limit_min, which depends on the machine's speed; "
                          "re-run the same command to resume from the checkpoint.")
