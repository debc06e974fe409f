from __future__ import annotations

from typing import Annotated, Optional

import typer

from rlhf.cli._common import ConfigOpt, SetOpt, build_config, console, progress_bar, stage_progress, user_errors
from rlhf.cli.app import app

constitutional = typer.Typer(
    help="Constitutional AI: the whole chain (run), or its stages: self-critique and revision, AI feedback.",
    no_args_is_help=True,
)
app.add_typer(constitutional, name="constitutional", rich_help_panel="6. Constitutional AI")

FeedbackModelOpt = Annotated[Optional[str], typer.Option(
    "--feedback-model", help="Critic and judge model (default: the policy itself); e.g. a larger instruct model.")]

TITLES = {
    "revise": "1. answer, critique, revise (red-team prompts)",
    "sft": "2. SFT on the revisions + SFT vs base",
    "sample": "3. sample completions from the SFT policy",
    "ai_feedback": "4. AI feedback (both orders) -> feedback store",
    "reward": "5. reward model on the AI's pairs",
    "ppo": "6. PPO from the SFT policy",
    "evaluate": "7. evaluate vs base + report",
}


@constitutional.command("run")
def run(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out_dir: Annotated[Optional[str], typer.Option("--out", "-o", help="Run folder.")] = None,
    policy: Annotated[Optional[str], typer.Option(help="Policy to align.")] = None,
    feedback_model: FeedbackModelOpt = None,
    constitution: Annotated[Optional[str], typer.Option(help="YAML constitution (principles, examples).")] = None,
    stage: Annotated[Optional[str], typer.Option(help="Re-run one stage only: revise, sft, sample, ai_feedback, reward, ppo, evaluate.")] = None,
) -> None:
    """Constitutional AI end to end: revise -> SFT -> sample -> AI feedback -> reward model -> PPO -> evaluate (resumable)."""
    from rlhf.cli.evaluate import print_headline
    from rlhf.constitutional.chain import ConstitutionalConfig, run_constitutional

    cfg = build_config(ConstitutionalConfig, config, set_, out_dir=out_dir, policy=policy, feedback_model=feedback_model,
                       constitution=constitution)
    console.print(f"[bold]rlhf constitutional run[/] -> {cfg.out_dir}   (policy {cfg.policy}, critic and judge "
                  f"{cfg.feedback_model or cfg.policy})")
    with stage_progress(TITLES) as (on_stage, on_progress):
        result = run_constitutional(cfg, on_stage, on_progress, only=stage)
    print_stage_figures(result.stages)
    if result.summary:
        print_headline(result.summary)
    console.print(f"report: [bold]{result.report_path}[/]")


def print_stage_figures(st: dict) -> None:
    """One line per stage: what it produced and how it measured."""

    def d(r: dict) -> str:
        e = r["delta"]
        return f"{r['before']:.3f} -> {r['after']:.3f} (diff {e['value']:+.3f}, 95% CI {e['low']:+.3f} to {e['high']:+.3f})"

    if "revise" in st:
        m = st["revise"]["measure"]
        console.print(f"revise: toxicity {d(m['toxicity'])}; on topic: answers {m['on_topic_answers']['value']:.0%}, revisions "
                      f"{m['on_topic_revisions']['value']:.0%}; {m['kept_for_sft']}/{m['prompts']} kept for SFT")
    if "sft" in st:
        m = st["sft"]["measure"]
        console.print(f"sft vs base: red-team toxicity {d(m['redteam_toxicity'])}; helpful relevance {d(m['helpful_relevance'])}; "
                      f"fluency {d(m['helpful_fluency'])}")
    if "ai_feedback" in st:
        a = st["ai_feedback"]
        m = a["measure"]
        console.print(f"ai feedback ({a['labeler']}): agrees with gold on {m['agreement']['value']:.0%} of {m['clear_pairs']} clear pairs "
                      f"(95% CI {m['agreement']['low']:.0%} to {m['agreement']['high']:.0%}); position bias {m['position_bias']['value']:.0%}; "
                      f"{a['stored']} judgements in {a['db']} (project {a['project']})")
    if "reward" in st and st["reward"].get("accuracy") is not None:
        g = st["reward"]["measure"]["gold"]["agreement"]
        console.print(f"reward model: held-out accuracy {st['reward']['accuracy']:.1%} on AI labels; agrees with gold {g['value']:.0%}")
    if "ppo" in st:
        console.print(f"ppo: {st['ppo']['steps']} steps, stopped by {st['ppo']['stop_reason']}")


@constitutional.command("revise")
def revise(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: Annotated[Optional[str], typer.Option(help="Policy that answers.")] = None,
    feedback_model: FeedbackModelOpt = None,
    prompts: Annotated[Optional[str], typer.Option(help="Red-team prompt file or built-in set.")] = None,
    constitution: Annotated[Optional[str], typer.Option(help="YAML constitution (principles, examples).")] = None,
    out_dir: Annotated[Optional[str], typer.Option("--out", "-o", help="Output folder.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N prompts.")] = None,
) -> None:
    """Answer red-team prompts, critique each answer against a principle, and revise it (resumable)."""
    from rlhf.constitutional.revise import ReviseConfig, run_revise

    cfg = build_config(ReviseConfig, config, set_, model=model, feedback_model=feedback_model, prompts=prompts,
                       constitution=constitution, out_dir=out_dir, limit=limit)
    with user_errors(), progress_bar("critique + revise (prompts)") as update:
        res = run_revise(cfg, on_progress=lambda d, t: update(d, t))
    console.print(f"{len(res.kept)} of {len(res.records)} revisions kept -> {res.out_dir}/sft.jsonl (for `rlhf sft`) "
                  f"and {res.out_dir}/pairs.jsonl")


@constitutional.command("ai-feedback")
def ai_feedback(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: Annotated[Optional[str], typer.Option("--feedback-model", "--model", help="Feedback (judge) model.")] = None,
    generations: Annotated[Optional[str], typer.Option(help="`rlhf generate` output.")] = None,
    project: Annotated[Optional[str], typer.Option("--project", "-p", help="Label this feedback-store project, as an AI labeler.")] = None,
    db: Annotated[Optional[str], typer.Option("--db", help="Feedback store holding --project (SQLite path or URL).")] = None,
    out_dir: Annotated[Optional[str], typer.Option("--out", "-o", help="Output folder.")] = None,
) -> None:
    """Label pairs of completions with AI feedback (RLAIF); with --project, into the feedback store as an AI labeler."""
    from rlhf.constitutional.ai_feedback import AIFeedbackConfig, run_ai_feedback

    cfg = build_config(AIFeedbackConfig, config, set_, model=model, generations=generations, project=project, db=db, out_dir=out_dir)
    with user_errors(), progress_bar("AI feedback (prompts)") as update:
        s = run_ai_feedback(cfg, on_progress=lambda d, t: update(d, t))
    bias = "n/a" if s.position_bias is None else f"{s.position_bias:.0%}"
    console.print(f"{s.pairs} pairs from {s.prompts} prompts ({s.dropped} ties dropped) -> {cfg.out_dir}/pairs.jsonl; "
                  f"the choice flipped with the order on {bias} of the comparisons")
    if s.labeler:
        console.print(f"{s.stored} new judgements by AI labeler [bold]{s.labeler}[/] in project {cfg.project} ({cfg.db}); "
                      f"compare with people: rlhf feedback agreement --project {cfg.project} --db {cfg.db}")


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
