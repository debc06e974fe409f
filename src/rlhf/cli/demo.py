from __future__ import annotations

from typing import Annotated, Optional

import typer

from rlhf.cli._common import ConfigOpt, SetOpt, build_config, console, stage_progress
from rlhf.cli.app import app
from rlhf.cli.evaluate import print_headline
from rlhf.demo import STAGES, DemoConfig, run_demo

TITLES = {
    "generate": "1. generate completions",
    "feedback": "2. judges + human feedback (simulated labelers over HTTP) + agreement + export",
    "reward": "3. train reward model",
    "sft": "4. SFT on the labelers' top-ranked completions (with sft_first; else nothing to do)",
    "ppo": "5. policy optimisation (KL to the reference)",
    "evaluate": "6. evaluate base vs aligned per split + verdict + report",
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
    with stage_progress(TITLES) as (on_stage, on_progress):
        result = run_demo(cfg, on_stage, on_progress, only=stage)
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
    if st.get("sft", {}).get("steps"):
        console.print(f"sft: {st['sft']['examples']} top-ranked completions of {st['sft']['prompts']} prompts, "
                      f"{st['sft']['steps']} steps, loss {st['sft']['loss_first']:.3f} -> {st['sft']['loss_last']:.3f}")
    if "ppo" in st:
        console.print(f"policy optimiser [bold]{st['ppo'].get('optimizer', 'ppo')}[/]: {st['ppo']['steps']} steps, "
                      f"stopped by {st['ppo']['stop_reason']}")
    if result.summary:
        print_headline(result.summary)
    console.print(f"report: [bold]{result.report_path}[/]")
