"""`rlhf ppo | rloo | grpo | dpo`: one thin command per policy optimiser over `rlhf.policy.train_policy`."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from rlhf.cli._common import ConfigOpt, SetOpt, build_config, console, err_console, progress_bar, user_errors
from rlhf.cli.app import app
from rlhf.policy import DPOConfig, GRPOConfig, PPOConfig, RLOOConfig, train_policy
from rlhf.policy.metrics import step_line
from rlhf.reward.functions import load_reward_function

PANEL = "4. Policy optimisation"
ModelOpt = Annotated[Optional[str], typer.Option(help="Policy alias, folder or hub id (with LoRA also the reference).")]
PromptsOpt = Annotated[Optional[str], typer.Option(help="Prompt file or built-in set (helpful, redteam).")]
RewardOpt = Annotated[Optional[str], typer.Option(help="Reward: rm:FOLDER (trained reward model), classifier:MODEL, scorer:toxicity or python:module:fn.")]
OutOpt = Annotated[Optional[str], typer.Option("--out", "-o", help="Output folder.")]
StepsOpt = Annotated[Optional[int], typer.Option(help="Maximum steps.")]
LoraOpt = Annotated[Optional[bool], typer.Option("--lora/--full", help="Train a LoRA adapter or all weights.")]
SeedOpt = Annotated[Optional[int], typer.Option(help="Random seed.")]
KOpt = Annotated[Optional[int], typer.Option("--k", help="Completions sampled per prompt (the group).")]


def _run(cfg: Any, reward_fn=None) -> None:
    name = type(cfg).__name__.removesuffix("Config").upper()
    with user_errors(), progress_bar(f"{name.lower()} (steps)", total=getattr(cfg, "max_steps", None)) as update:

        def on_step(m: dict) -> None:
            update(m["step"], total=m["steps_total"], info=step_line(m))

        res = train_policy(cfg, reward_fn, on_step=on_step)
    first, final = (res.history[0] if res.history else {}), res.final
    if res.algorithm == "dpo":
        c = res.closing
        console.print(
            f"DPO stopped after {res.steps} steps ({res.stop_reason}): held-out implicit-reward accuracy "
            f"[bold]{c.get('eval/accuracy', float('nan')):.1%}[/bold], margin {c.get('eval/margin', float('nan')):.3f}, "
            f"KL to the reference on sampled text {c.get('kl/mean', float('nan')):.2f} nats"
        )
    else:
        console.print(
            f"{name} stopped after {res.steps} steps ({res.stop_reason}): mean reward "
            f"{first.get('reward/raw_mean', float('nan')):.3f} -> [bold]{final.get('reward/raw_mean', float('nan')):.3f}[/bold], "
            f"KL {final.get('kl/mean', float('nan')):.2f} nats"
        )
    console.print(f"Policy -> {res.policy_dir}; metrics.jsonl, tb/ and {res.config_path.name} -> {res.out_dir}")
    if not res.complete:
        err_console.print("[yellow]incomplete:[/yellow] stopped by time_limit_min, which depends on the machine's speed; "
                          "re-run the same command to resume from the checkpoint.")


def _reward(spec: str):
    try:
        return load_reward_function(spec)
    except (ValueError, ImportError, AttributeError) as e:
        err_console.print(f"[red]error:[/red] reward {spec!r}: {e}")
        raise typer.Exit(2) from None


def _online(cls: type, config, set_, lora, **flags) -> None:
    extra = {"lora.enabled": lora} if lora is not None else {}
    cfg = build_config(cls, config, set_, **flags, **extra)
    _run(cfg, _reward(cfg.reward))


@app.command(rich_help_panel=PANEL)
def ppo(config: ConfigOpt = None, set_: SetOpt = None, model: ModelOpt = None, prompts: PromptsOpt = None,
        reward: RewardOpt = None, out_dir: OutOpt = None, steps: StepsOpt = None, lora: LoraOpt = None,
        seed: SeedOpt = None) -> None:
    """PPO against a reward: value head, GAE, clipped loss, per-token KL penalty to the reference (resumable)."""
    _online(PPOConfig, config, set_, lora, model=model, prompts=prompts, reward=reward, out_dir=out_dir,
            max_steps=steps, seed=seed)


@app.command(rich_help_panel=PANEL)
def rloo(config: ConfigOpt = None, set_: SetOpt = None, model: ModelOpt = None, prompts: PromptsOpt = None,
         reward: RewardOpt = None, out_dir: OutOpt = None, steps: StepsOpt = None, k: KOpt = None,
         lora: LoraOpt = None, seed: SeedOpt = None) -> None:
    """RLOO against a reward: k samples per prompt, leave-one-out baseline, no value model (resumable)."""
    _online(RLOOConfig, config, set_, lora, model=model, prompts=prompts, reward=reward, out_dir=out_dir,
            max_steps=steps, k=k, seed=seed)


@app.command(rich_help_panel=PANEL)
def grpo(config: ConfigOpt = None, set_: SetOpt = None, model: ModelOpt = None, prompts: PromptsOpt = None,
         reward: RewardOpt = None, out_dir: OutOpt = None, steps: StepsOpt = None, k: KOpt = None,
         lora: LoraOpt = None, seed: SeedOpt = None) -> None:
    """GRPO against a reward: k samples per prompt, group-normalised advantages, no value model (resumable)."""
    _online(GRPOConfig, config, set_, lora, model=model, prompts=prompts, reward=reward, out_dir=out_dir,
            max_steps=steps, k=k, seed=seed)


@app.command(rich_help_panel=PANEL)
def dpo(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    pairs: Annotated[Optional[str], typer.Option(help="Preference pairs JSONL (prompt/chosen/rejected, optional weight).")] = None,
    model: ModelOpt = None,
    out_dir: OutOpt = None,
    loss: Annotated[Optional[str], typer.Option(help="sigmoid (DPO) or ipo.")] = None,
    beta: Annotated[Optional[float], typer.Option(help="DPO beta / IPO tau.")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Passes over the training pairs.")] = None,
    steps: StepsOpt = None,
    lora: LoraOpt = None,
    seed: SeedOpt = None,
) -> None:
    """DPO on preference pairs (IPO and conservative variants): no reward model, no rollouts (resumable)."""
    extra = {"lora.enabled": lora} if lora is not None else {}
    cfg = build_config(DPOConfig, config, set_, pairs=pairs, model=model, out_dir=out_dir, loss_type=loss, beta=beta,
                       epochs=epochs, max_steps=steps, seed=seed, **extra)
    _run(cfg)
