"""`rlhf train-reward` and `rlhf score`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rlhf.cli._common import ConfigOpt, SetOpt, build_config, console, progress_bar, user_errors
from rlhf.cli.app import app
from rlhf.reward.config import RewardTrainConfig, ScoreConfig


@app.command("train-reward", rich_help_panel="3. Reward")
def train_reward(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    pairs: Annotated[Optional[str], typer.Option(help="Preference pairs file (prompt, chosen, rejected).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Trunk: alias, folder or hub id.")] = None,
    out_dir: Annotated[Optional[str], typer.Option("--out", "-o", help="Output folder.")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Passes over the training pairs.")] = None,
    lora: Annotated[Optional[bool], typer.Option("--lora/--full", help="LoRA adapters or a full fine-tune.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
) -> None:
    """Train a reward model on preference pairs (resumes from out/checkpoint when present)."""
    from rlhf.reward.train import train_reward_model

    cfg = build_config(RewardTrainConfig, config, set_, pairs=pairs, model=model, out_dir=out_dir, epochs=epochs,
                       lora=lora, seed=seed)
    last_eval = [""]

    with user_errors(), progress_bar("train-reward (steps)") as update:
        def on_step(s) -> None:
            if s.eval is not None:
                last_eval[0] = f" | eval acc {s.eval.accuracy:.3f}"
            update(s.step, s.total_steps, info=f"loss {s.loss:.3f}{last_eval[0]}")

        res = train_reward_model(cfg, on_step=on_step)
    if res.eval is not None:
        console.print(
            f"Validation pairwise accuracy [bold]{res.eval.accuracy:.1%}[/bold] on {res.eval_pairs} pairs (they chose the checkpoint) "
            f"(mean margin {res.eval.mean_margin:.3f}, loss {res.eval.loss:.4f}, best step {res.best_step})"
        )
        console.print(res.eval.table(), markup=False)
    if res.test is not None:
        lo, hi = res.test_accuracy_ci
        console.print(
            f"Test pairwise accuracy [bold]{res.test.accuracy:.1%}[/bold] (95% CI {lo:.1%}-{hi:.1%}, prompts resampled) "
            f"on {res.test_pairs} pairs of {res.test_prompts} prompts used neither for training nor for choosing the checkpoint"
        )
    mean, std = res.normalization
    console.print(
        f"Trained {res.steps} steps on {res.train_pairs} pairs ({res.pairs_per_s:.1f} pairs/s"
        f"{', stopped early' if res.stopped_early else ''}); reward mean {mean:.3f} std {std:.3f} -> {res.out_dir}"
    )


@app.command(rich_help_panel="3. Reward")
def score(
    input: Annotated[str, typer.Argument(help="Records with prompt and completion fields.")],
    reward: Annotated[str, typer.Option(
        "--reward", "-r", help="rm:PATH | PATH | classifier:MODEL[:LABEL] | scorer:NAME | python:mod:fn")],
    output: Annotated[str, typer.Option("--out", "-o", help="Output JSONL (input records + reward).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Records per reward call.")] = None,
    normalize: Annotated[Optional[bool], typer.Option("--normalize/--raw", help="Use the saved mean/std.")] = None,
) -> None:
    """Score prompt/completion records with any reward function; writes JSONL with a `reward` field."""
    from rlhf.reward.score import score_file

    cfg = build_config(ScoreConfig, config, set_, reward=reward, input=input, output=output, batch_size=batch_size,
                       normalize=normalize)
    with user_errors(), progress_bar("score (records)") as update:
        stats = score_file(cfg, on_progress=lambda d, t: update(d, t))
    console.print(f"Scored {stats.records} records in {stats.seconds:.1f} s: reward mean {stats.mean:.4f} "
                  f"std {stats.std:.4f} -> {stats.output}")
