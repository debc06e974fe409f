from __future__ import annotations

from typing import Annotated, Optional

import typer

from rlhf.cli._common import ConfigOpt, SetOpt, build_config, console, progress_bar, user_errors
from rlhf.cli.app import app

constitutional = typer.Typer(
    help="Constitutional AI: self-critique and revision (then `rlhf sft`), and AI feedback pairs (then train-reward, ppo).",
    no_args_is_help=True,
)
app.add_typer(constitutional, name="constitutional", rich_help_panel="6. Constitutional AI")


@constitutional.command("revise")
def revise(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: Annotated[Optional[str], typer.Option(help="Model that answers, critiques and revises.")] = None,
    prompts: Annotated[Optional[str], typer.Option(help="Red-team prompt file or built-in set.")] = None,
    constitution: Annotated[Optional[str], typer.Option(help="YAML list of principles.")] = None,
    out_dir: Annotated[Optional[str], typer.Option("--out", "-o", help="Output folder.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N prompts.")] = None,
) -> None:
    """Answer red-team prompts, critique each answer against a principle, and revise it (resumable)."""
    from rlhf.constitutional.revise import ReviseConfig, run_revise

    cfg = build_config(ReviseConfig, config, set_, model=model, prompts=prompts, constitution=constitution, out_dir=out_dir, limit=limit)
    with user_errors(), progress_bar("critique + revise (prompts)") as update:
        out = run_revise(cfg, on_progress=lambda d, t: update(d, t))
    n = sum(1 for _ in open(out / "sft.jsonl", encoding="utf-8"))
    console.print(f"{n} revisions -> {out}/sft.jsonl (for `rlhf sft`) and {out}/pairs.jsonl")


@constitutional.command("ai-feedback")
def ai_feedback(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: Annotated[Optional[str], typer.Option(help="Feedback model.")] = None,
    generations: Annotated[Optional[str], typer.Option(help="`rlhf generate` output.")] = None,
    out_dir: Annotated[Optional[str], typer.Option("--out", "-o", help="Output folder.")] = None,
) -> None:
    """Label pairs of completions with AI feedback (RLAIF) instead of people; writes pairs.jsonl."""
    from rlhf.constitutional.ai_feedback import AIFeedbackConfig, run_ai_feedback

    cfg = build_config(AIFeedbackConfig, config, set_, model=model, generations=generations, out_dir=out_dir)
    with user_errors(), progress_bar("AI feedback (prompts)") as update:
        counts = run_ai_feedback(cfg, on_progress=lambda d, t: update(d, t))
    console.print(f"{counts['pairs']} pairs from {counts['prompts']} prompts ({counts['dropped']} dropped as unsure) -> {cfg.out_dir}/pairs.jsonl")


@app.command(rich_help_panel="6. Constitutional AI")
def sft(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: Annotated[Optional[str], typer.Option(help="Model to fine-tune.")] = None,
    data: Annotated[Optional[str], typer.Option(help="prompt/response JSONL.")] = None,
    out_dir: Annotated[Optional[str], typer.Option("--out", "-o", help="Output folder.")] = None,
) -> None:
    """Supervised fine-tuning on prompt/response pairs (loss on the response only), LoRA by default."""
    from rlhf.sft import SFTConfig, train_sft

    cfg = build_config(SFTConfig, config, set_, model=model, data=data, out_dir=out_dir)
    with user_errors(), progress_bar("sft (steps)") as update:
        res = train_sft(cfg, on_step=lambda s, t, loss: update(s, t, info=f"loss {loss:.3f}"))
    console.print(f"{res.steps} steps, loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f}; saved {res.policy_dir}")
