"""`rlhf constitutional run`: Constitutional AI end to end (Bai et al. 2022), into one run folder.

red-team prompts -> 1. revise (the policy answers; the critic critiques and revises) -> 2. SFT on the
revisions -> 3. sample completions from the SFT policy -> 4. AI feedback (the judge compares them; its
labels also land in the run's feedback store) -> 5. reward model on the AI's pairs -> 6. PPO from the
SFT policy -> 7. evaluate against the base policy -> the demo's report plus the CAI figures.

Each stage records its result and its measurements in `stages.json` when it finishes; re-running skips
finished stages and the unfinished one resumes (revise, sample and AI feedback from their logs, PPO from
its checkpoint). Every stage is also a command of its own (docs/constitutional.md).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlhf.config import save_config
from rlhf.constitutional.ai_feedback import AIFeedbackConfig
from rlhf.constitutional.measure import MeasureConfig
from rlhf.constitutional.revise import ReviseConfig
from rlhf.cpu import setup_cpu
from rlhf.demo import EVAL_SAMPLES, ONLINE, SYSTEM_PROMPT
from rlhf.evaluate.run import EvaluateConfig
from rlhf.generate import GenerateConfig
from rlhf.generation import SamplingConfig
from rlhf.models.registry import DEFAULT_POLICY, DEFAULT_REWARD_TRUNK
from rlhf.policy.ppo import PPOConfig
from rlhf.reward.config import RewardTrainConfig
from rlhf.sft import SFTConfig
from rlhf.stages import ProgressCallback, StageCallback, StageIncomplete, Stages

STAGES = ("revise", "sft", "sample", "ai_feedback", "reward", "ppo", "evaluate")
PROJECT = "constitutional"


@dataclass(frozen=True)
class ConstitutionalConfig:
    out_dir: str = "runs/constitutional"
    """Run folder: every stage writes into a subfolder; stages.json records what is finished."""
    policy: str = DEFAULT_POLICY
    """Policy to align (alias, folder or hub id)."""
    feedback_model: str | None = None
    """Critic and judge: critiques, revises and compares responses (null = the policy itself)."""
    reward_trunk: str = DEFAULT_REWARD_TRUNK
    """Reward-model backbone."""
    prompts: str = "redteam"
    """Red-team prompts: the train split feeds revision, sampling and PPO; the eval split the evaluation."""
    helpful_prompts: str = "helpful"
    """Helpful prompts (eval split): SFT is checked for relevance and fluency there."""
    train_prompts: int | None = 96
    """Train prompts to revise, sample and run PPO on (null = the whole train split)."""
    eval_prompts: int | None = None
    """Held-out prompts per set (red-team and helpful) to evaluate on (null = the whole eval split)."""
    system_prompt: str | None = SYSTEM_PROMPT
    """System message for SFT (and its measurement), sampling, PPO and evaluation (the demo's). Revision answers
    without one, as the critique and revision prompts are their own chat turns."""
    constitution: str | None = None
    """YAML file of principles and examples (null = the built-in constitution)."""
    seed: int = 0
    """Seed shared by all stages."""
    threads: int | None = None
    """torch CPU threads (null = torch's default)."""
    revise: ReviseConfig = field(default_factory=ReviseConfig)
    """Stage 1 settings (models, prompts, constitution and out_dir are set by the run)."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """Stage 2 settings (model, data, out_dir; merge is forced on so later stages load one folder)."""
    sample: GenerateConfig = field(default_factory=lambda: GenerateConfig(
        num_completions=4, sampling=SamplingConfig(max_new_tokens=64, temperature=0.7)))
    """Stage 3 settings: completions of the SFT policy for the judge to compare."""
    ai_feedback: AIFeedbackConfig = field(default_factory=lambda: AIFeedbackConfig(generations=None))
    """Stage 4 settings (model, project, db, constitution and out_dir are set by the run)."""
    reward: RewardTrainConfig = field(default_factory=lambda: RewardTrainConfig(epochs=3.0, eval_fraction=0.15, max_length=192))
    """Stage 5 settings (pairs, model and out_dir are set by the run)."""
    ppo: PPOConfig = field(default_factory=lambda: PPOConfig(**ONLINE))
    """Stage 6 settings (model = the SFT policy, prompts, reward and out_dir are set by the run); the demo's, so that
    the verdicts compare. At PPO's own defaults (T = 1.0, 32 tokens, no system prompt) the base wrote word salad."""
    evaluate: EvaluateConfig = field(default_factory=lambda: EvaluateConfig(samples_per_prompt=EVAL_SAMPLES))
    """Stage 7 settings (models, rewards, out_dir, system prompt and sampling, which is PPO's, are set by the run;
    the red-team and helpful eval splits are reported apart, with the demo's samples per prompt)."""
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    """How each stage's output is measured (relevance model, on-topic threshold, gold margin, held-out sizes)."""


@dataclass
class ConstitutionalResult:
    out_dir: Path
    report_path: Path
    summary: dict
    stages: dict


def stage_configs(cfg: ConstitutionalConfig) -> dict:
    """The resolved per-stage configs, with the run's paths and shared settings filled in."""
    root, rep = Path(cfg.out_dir), dataclasses.replace
    sft_policy = str(root / "sft" / "policy")
    critic = cfg.feedback_model or cfg.policy
    common = {"seed": cfg.seed, "threads": cfg.threads}
    return {
        "revise": rep(cfg.revise, model=cfg.policy, feedback_model=cfg.feedback_model, prompts=cfg.prompts, split="train",
                      limit=cfg.train_prompts, constitution=cfg.constitution, out_dir=str(root / "revise"), **common),
        "sft": rep(cfg.sft, model=cfg.policy, data=str(root / "revise" / "sft.jsonl"), out_dir=str(root / "sft"), merge=True,
                   system_prompt=cfg.system_prompt, **common),
        "sample": rep(cfg.sample, model=sft_policy, prompts=cfg.prompts, split="train", limit=cfg.train_prompts,
                      system_prompt=cfg.system_prompt, out_dir=str(root / "sample"), **common),
        "ai_feedback": rep(cfg.ai_feedback, model=critic, generations=str(root / "sample" / "completions.jsonl"), project=PROJECT,
                           db=str(root / "ai_feedback" / "feedback.db"), constitution=cfg.constitution,
                           out_dir=str(root / "ai_feedback"), **common),
        "reward": rep(cfg.reward, pairs=str(root / "ai_feedback" / "pairs.jsonl"), model=cfg.reward_trunk,
                      out_dir=str(root / "reward"), **common),
        "ppo": rep(cfg.ppo, model=sft_policy, prompts=cfg.prompts, split="train", limit=cfg.train_prompts,
                   system_prompt=cfg.system_prompt, reward=f"rm:{root / 'reward'}", out_dir=str(root / "ppo"), **common),
        # KL is measured to the base policy (SFT + PPO drift) and held to PPO's target (read from the PPO run): the
        # budget is the user's, whatever stage spent it.
        "evaluate": rep(cfg.evaluate, aligned=str(root / "ppo"), base=cfg.policy, prompts=(cfg.prompts, cfg.helpful_prompts),
                        split="eval", limit=cfg.eval_prompts, rewards=(f"rm:{root / 'reward'}",), out_dir=str(root / "evaluate"),
                        seed=cfg.seed, kl_target=None, sampling=cfg.ppo.sampling, system_prompt=cfg.system_prompt),
    }


def run_constitutional(
    cfg: ConstitutionalConfig,
    on_stage: StageCallback | None = None,
    on_progress: ProgressCallback | None = None,
    only: str | None = None,
) -> ConstitutionalResult:
    """Run (or resume) the whole chain; `only` re-runs a single stage (its inputs must exist)."""

    from rlhf.constitutional import stages as st

    if only is not None and only not in STAGES:
        raise ValueError(f"unknown stage {only!r}; choose from {', '.join(STAGES)}")
    setup_cpu(cfg.threads)
    root = Path(cfg.out_dir)
    root.mkdir(parents=True, exist_ok=True)
    stages = Stages(root / "stages.json")
    sc = stage_configs(cfg)
    settings = {name: {"config": sc[name], "measure": cfg.measure} for name in STAGES}  # each stage measures its output
    stages.check(settings, rerun=only)
    save_config(cfg, root / "constitutional.yaml")
    runners = {"revise": st.revise, "sft": st.sft, "sample": st.sample, "ai_feedback": st.ai_feedback,
               "reward": st.reward, "ppo": st.ppo, "evaluate": st.evaluate}
    for name in STAGES:
        run = name == only if only else not stages.done(name)
        if on_stage and (run or not only):
            on_stage(name, "start" if run else "skip")
        if not run:
            continue
        t0 = time.perf_counter()
        progress = (lambda d, t, info="", _n=name: on_progress(_n, d, t, info)) if on_progress else (lambda *a, **k: None)
        result = runners[name](cfg, sc, stages.data, progress)
        stages.finish(name, result | {"seconds": round(time.perf_counter() - t0, 1)}, settings[name])
        if on_stage:
            on_stage(name, "done")
    summary_path = Path(sc["evaluate"].out_dir) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return ConstitutionalResult(root, Path(sc["evaluate"].out_dir) / "report.html", summary, stages.data)


__all__ = ["ConstitutionalConfig", "ConstitutionalResult", "STAGES", "StageIncomplete", "run_constitutional", "stage_configs"]
