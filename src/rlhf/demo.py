"""`rlhf demo`: the whole RLHF loop on the default models, offline, into one run folder.

generate -> feedback (import, judges, serve, simulated labelers over HTTP) -> agreement (flag + exclude)
-> export pairs -> train reward model -> (with sft_first: SFT on the labelers' top choices) -> PPO (or RLOO/GRPO)
against the reward model, or DPO on the pairs -> evaluate base vs aligned per split -> report.

The prompts mix the built-in helpful and red-team sets (train splits) for labeling and policy optimisation;
both eval splits are evaluated and reported separately. The simulated labelers rank by `rlhf.judges.Taste`:
harmless first, then helpful (relevance and fluency), as the written instructions say.

Each stage records its result in `stages.json` when it finishes; re-running skips finished stages
and the unfinished one resumes (generation and PPO from their own logs/checkpoints).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.config import save_config
from rlhf.cpu import setup_cpu
from rlhf.data import read_records
from rlhf.evaluate.run import EvaluateConfig, EvaluationResult, run_evaluate
from rlhf.feedback.config import AgreementConfig, ExportConfig, ServeConfig, SimulationConfig
from rlhf.generate import GenerateConfig, run_generate
from rlhf.generation import SamplingConfig
from rlhf.judges import Taste
from rlhf.models.registry import DEFAULT_POLICY, DEFAULT_REWARD_TRUNK
from rlhf.policy import DPOConfig, GRPOConfig, PPOConfig, RLOOConfig
from rlhf.policy.config import Optimizer, with_shared
from rlhf.reward.config import RewardTrainConfig
from rlhf.sft import SFTConfig
from rlhf.stages import ProgressCallback, StageCallback, StageIncomplete, Stages

log = logging.getLogger(__name__)

STAGES = ("generate", "feedback", "reward", "sft", "ppo", "evaluate")

INSTRUCTIONS = """\
## Task
You see a user's message and several replies written by an AI assistant. **Rank the replies from best to worst**
by how *harmless and helpful* they are.

## What "best" means
1. **Harmless first.** A reply that insults, mocks, swears at or demeans anyone (the user, a third person, a group)
   ranks below any reply that stays polite — even if the user asked for the insult.
2. **Then helpful.** Among polite replies, prefer the one that actually helps: it addresses the request, offers a
   kind alternative when it declines (e.g. light-hearted teasing instead of a brutal roast), and is clear.
   When the request itself asks for harm (an insult, a roast, a rant at someone), going along with it is not
   help: a clear, polite reply that declines or redirects ranks above one that does what was asked.
3. Ignore length and style otherwise; a short polite reply beats a long rude one. A reply that stops mid-sentence
   (cut off at the length limit) helps less than one that finishes.

## Ties and unusable items
- If two replies are equally good (or equally bad), **mark them as tied**.
- If the item cannot be judged (empty or garbled replies, a prompt you cannot understand), **flag it as unusable**
  and say why, instead of ranking it.

## Keyboard
Press the number keys to pick replies in order of preference; see the help on the labeling page.
"""


# The demo's settings for every online optimiser (PPO, RLOO, GRPO share one KL controller); the constitutional
# chain's PPO uses them too, so that its verdict compares with the demo's.
SYSTEM_PROMPT = "You are a helpful assistant. Answer briefly."
# Floor 0.1: at 0.05, beta reached the floor while KL was still under target and KL then ran to 11 in two steps
# (docs/evaluate.md, "Requests for harm judged as such").
ONLINE = dict(max_steps=20, lr=3e-4, kl_coef=0.2, kl_coef_min=0.1,
              sampling=SamplingConfig(max_new_tokens=64, temperature=0.7))
# Samples per held-out prompt in the demo's and the chain's evaluation: with one, the 95% CI of the red-team toxicity
# difference is about +-0.08 wide when nothing changed, wider than halving the base mean (about 0.11) would move it;
# with 4, +-0.04. 8, because at 4 the helpful relevance and fluency CIs were 3.3-4.3% wide each side of a 5%
# non-inferiority margin: a true -2% failed the test as often as not (docs/evaluate.md).
EVAL_SAMPLES = 8


@dataclass(frozen=True)
class DemoConfig:
    out_dir: str = "runs/demo"
    """Run folder: every stage writes into a subfolder; stages.json records what is finished."""
    policy: str = DEFAULT_POLICY
    """Policy to align (alias, folder or hub id)."""
    reward_trunk: str = DEFAULT_REWARD_TRUNK
    """Reward-model backbone."""
    prompts: tuple[str, ...] = ("redteam", "helpful")
    """Prompt sets: their train splits, mixed, feed labeling and PPO; each eval split is evaluated on its own."""
    train_prompts: int | None = 48
    """Train prompts per set to label and to run PPO on (null = the whole train split)."""
    eval_prompts: int | None = None
    """Held-out prompts per set to evaluate on (null = the whole eval split)."""
    system_prompt: str | None = SYSTEM_PROMPT
    """System message used identically in generation, PPO, the fluency judge and evaluation."""
    criterion: str = "harmless and helpful"
    """The labeling criterion shown to labelers."""
    honest_labelers: int = 3
    """Simulated honest labelers (rank by the taste below, with noise)."""
    taste: Taste = field(default_factory=lambda: Taste(toxicity_weight=2.0, unfinished_penalty=0.2,
                                                      harmful_helpfulness=0.5, substance_words=20))
    """How the honest labelers weigh toxicity, relevance, fluency and a reply cut off at the token limit, as the
    instructions above say (rlhf.judges.Taste; docs/evaluate.md). P(toxic) at weight 2.0, so that harm decides
    pairs below the toxic threshold too: at 0.5 the reward model ranked held-out answers by harm no better than chance
    (59% [40%, 78%] of the pairs, against 82% at 2.0; bench/reward_axes.py, docs/evaluate.md). On the requests of
    `harmful_sets`, a coherent reply is worth 0.5 and relevance to the request nothing: with relevance counted, a
    polite-enough rant that did what the red-team prompt asked beat a decline, and the reward model learned relevance
    (r = 0.39 with the judge on seed 2's red-team answers) more than harm (r = -0.20; docs/evaluate.md). A reply
    under 20 words keeps only words/20 of its helpfulness: without that, fluent fragments topped the taste on
    red-team prompts and PPO learned to write them (seeds 0 and 1 at 47a7a54, docs/evaluate.md)."""
    harmful_sets: tuple[str, ...] = ("redteam",)
    """Prompt sets (of `prompts`) whose requests ask for harm: the labelers judge them by `taste.harmful_helpfulness`."""
    labeler_noise: float = 0.05
    """Noise of the honest labelers: std of Gaussian noise added to each completion's taste score."""
    labeler_tie_margin: float = 0.05
    """Labelers tie completions whose (noisy) taste scores differ by less than this, as a person would."""
    bad_labeler: bool = True
    """Add one deliberately bad labeler (ranks in reverse); the agreement report should flag it."""
    labelers_per_item: int = 3
    """k: labelers each item goes to."""
    seed: int = 0
    """Seed shared by all stages."""
    threads: int | None = None
    """torch CPU threads (null = torch's default)."""
    generate: GenerateConfig = field(default_factory=lambda: GenerateConfig(
        num_completions=8, sampling=SamplingConfig(max_new_tokens=64, temperature=0.7)))
    """Stage 1 settings (model, prompts, system prompt and out_dir are set by the demo). Eight completions per
    prompt, so that more of the few toxic ones (about 6% of red-team answers) reach the labelers' rankings."""
    reward: RewardTrainConfig = field(default_factory=lambda: RewardTrainConfig(
        epochs=1.0, eval_fraction=0.1, test_fraction=0.1, max_length=192))
    """Stage 4 settings (pairs, model and out_dir are set by the demo). One epoch: eight completions give up to 28
    pairs per ranking, about 2,500 in all; one pass over them took 3.8 min, three over 530 pairs 2.9 (docs/evaluate.md)."""
    sft_first: bool = False
    """Fine-tune the policy on each train prompt's top-ranked completions (the labelers' consensus choice among its
    own samples, `feedback/rankings.jsonl`) before stage 5, which then starts from that adapter; the reference stays
    the base. InstructGPT's order, SFT then RL (Ouyang et al. 2022), with rejection-sampling data (Touvron et al.
    2023 sec. 3.2.3). Off by default: seed 0 with it regressed (red-team answers halved in length, some evasive or
    garbled, toxicity -5% n.s.; docs/evaluate.md)."""
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(epochs=2.0, lr=2e-4, batch_size=8, max_length=256))
    """SFT settings with sft_first (model, data, LoRA, system prompt and out_dir are set by the demo)."""
    optimizer: Optimizer = "ppo"
    """Stage 5's policy optimiser: ppo, rloo or grpo against the reward model, or dpo on the exported pairs."""
    ppo: PPOConfig = field(default_factory=lambda: PPOConfig(**ONLINE))
    """Stage 5 settings with optimizer=ppo (model, prompts, reward, system prompt and out_dir are set by the demo).
    A gentler lr and a stronger, floored beta than PPO's defaults: at lr 5e-4 and beta 0.1 falling to 0.04, two
    demo runs drifted to KL 11.9 against a target of 6 without raising the reward (docs/evaluate.md)."""
    dpo: DPOConfig = field(default_factory=lambda: DPOConfig(sampling=SamplingConfig(max_new_tokens=64, temperature=0.7)))
    """Stage 5 settings with optimizer=dpo (model, pairs, system prompt and out_dir are set by the demo)."""
    rloo: RLOOConfig = field(default_factory=lambda: RLOOConfig(**ONLINE))
    """Stage 5 settings with optimizer=rloo (model, prompts, reward, system prompt and out_dir are set by the demo).
    lr and beta as PPO's above: they share its KL controller, and `bench/optimizers.py` compares them at equal
    settings."""
    grpo: GRPOConfig = field(default_factory=lambda: GRPOConfig(**ONLINE))
    """Stage 5 settings with optimizer=grpo (model, prompts, reward, system prompt and out_dir are set by the demo).
    lr and beta as PPO's."""
    evaluate: EvaluateConfig = field(default_factory=lambda: EvaluateConfig(samples_per_prompt=EVAL_SAMPLES))
    """Stage 6 settings (models, prompts, rewards and out_dir are set by the demo; sampling, system prompt and KL
    target come from PPO's saved config), with 8 samples per held-out prompt (EVAL_SAMPLES)."""

    def __post_init__(self) -> None:
        unknown = [h for h in self.harmful_sets if h not in self.prompts]
        if unknown:
            raise ValueError(f"harmful_sets names {unknown}, which are not among prompts {list(self.prompts)}: "
                             "their requests would silently be judged as harmless ones")
        if self.sft_first and self.optimizer == "dpo":
            raise ValueError("sft_first applies to ppo, rloo and grpo: DPO's reference must be the policy it starts "
                             "from, and in the demo that is the base")


@dataclass
class DemoResult:
    out_dir: Path
    report_path: Path
    summary: dict
    stages: dict[str, Any]


def stage_configs(cfg: DemoConfig) -> dict[str, Any]:
    """The resolved per-stage configs, with the demo's paths and shared settings filled in."""
    root = Path(cfg.out_dir)
    rep = dataclasses.replace
    train = str(root / "prompts_train.jsonl")  # the mixed train prompts, written by `write_train_prompts`
    opt = getattr(cfg, cfg.optimizer)
    policy = with_shared(opt, model=cfg.policy, prompts=train, split="train", limit=None,
                         init_adapter=str(root / "sft" / "adapter") if cfg.sft_first else opt.init_adapter,
                         system_prompt=cfg.system_prompt, reward=f"rm:{root / 'reward'}",
                         pairs=str(root / "feedback" / "pairs.jsonl"), out_dir=str(root / cfg.optimizer),
                         seed=cfg.seed, threads=cfg.threads)
    return {
        "generate": rep(cfg.generate, model=cfg.policy, prompts=train, split="train", limit=None,
                        system_prompt=cfg.system_prompt, out_dir=str(root / "generate"), seed=cfg.seed,
                        threads=cfg.threads),
        "reward": rep(cfg.reward, pairs=str(root / "feedback" / "pairs.jsonl"), model=cfg.reward_trunk,
                      out_dir=str(root / "reward"), seed=cfg.seed, threads=cfg.threads),
        "sft": rep(cfg.sft, model=cfg.policy, data=str(root / "feedback" / "rankings.jsonl"), out_dir=str(root / "sft"),
                   lora=policy.lora, system_prompt=cfg.system_prompt, merge=False, seed=cfg.seed, threads=cfg.threads),
        "ppo": policy,  # the policy stage, whichever optimiser runs it
        # base, sampling, system prompt and KL target are read from the policy run's saved config
        "evaluate": rep(cfg.evaluate, aligned=policy.out_dir, base=None, prompts=tuple(cfg.prompts), split="eval",
                        limit=cfg.eval_prompts, rewards=(f"rm:{root / 'reward'}",), out_dir=str(root / "evaluate"),
                        seed=cfg.seed, sampling=None, system_prompt=None, kl_target=None),
    }


def stage_settings(cfg: DemoConfig, sc: dict[str, Any]) -> dict[str, Any]:
    """What each stage's results depend on, beyond the stages before it (checked on resume)."""
    labelers = ("criterion", "honest_labelers", "taste", "harmful_sets", "labeler_noise", "labeler_tie_margin",
                "bad_labeler", "labelers_per_item", "seed")
    return {
        "generate": {"prompt_sets": cfg.prompts, "train_prompts": cfg.train_prompts, "config": sc["generate"]},
        "feedback": {k: getattr(cfg, k) for k in labelers},
        "reward": sc["reward"],
        "sft": {"sft_first": cfg.sft_first, "config": sc["sft"] if cfg.sft_first else None},
        "ppo": {"optimizer": cfg.optimizer, "config": sc["ppo"]},
        "evaluate": sc["evaluate"],
    }


def write_train_prompts(cfg: DemoConfig, path: Path) -> list[dict]:
    """The first `train_prompts` train prompts of each set, interleaved (so any prefix mixes the sets)."""
    from rlhf.data import read_prompts, resolve_prompts, write_jsonl

    per_set = [read_prompts(resolve_prompts(spec), split="train")[: cfg.train_prompts] for spec in cfg.prompts]
    rows = []
    for i in range(max(len(p) for p in per_set)):
        for spec, prompts in zip(cfg.prompts, per_set):
            if i < len(prompts):
                p = prompts[i]
                rows.append({"id": p.id, "prompt": p.prompt, "split": "train", "metadata": dict(p.metadata) | {"set": spec}})
    write_jsonl(path, rows)
    return rows


def judge_generations(cfg: DemoConfig, generations: Path, out: Path) -> dict[tuple[str, str], float]:
    """Toxicity, relevance and fluency of every completion (written to judges.jsonl); returns the taste per text."""
    from rlhf.data import read_generations, write_jsonl
    from rlhf.judges import Judges
    from rlhf.models.registry import load_causal_lm

    gens = read_generations(generations)
    prompts = [g.prompt for g in gens for _ in g.completions]
    texts = [c for g in gens for c in g.completions]
    # whether each completion ended by itself; records without the flag count as finished (the taste cannot tell)
    finished = [f for g in gens for f in g.metadata.get("finished", [True] * len(g.completions))]
    harmful = [g.metadata.get("set") in cfg.harmful_sets for g in gens for _ in g.completions]
    base, tok = load_causal_lm(cfg.policy)
    j = Judges(base, tok, cfg.system_prompt, cfg.evaluate.relevance_model)(prompts, texts)
    taste = j.taste(cfg.taste, finished, harmful)
    write_jsonl(out / "judges.jsonl", [
        {"prompt": p, "completion": t, "toxicity": a, "relevance": b, "fluency": c, "words": w, "finished": e,
         "harmful": h, "taste": u}
        for p, t, a, b, c, w, e, h, u in zip(prompts, texts, j.toxicity, j.relevance, j.fluency, j.words, finished,
                                             harmful, taste)
    ])
    return dict(zip(zip(prompts, texts), taste))


def run_feedback(cfg: DemoConfig, generations: Path, out: Path, progress: ProgressCallback | None = None) -> dict:
    """Import -> judges -> serve -> pre-assign -> simulated labelers over HTTP -> agreement -> exclude -> export."""
    from rlhf.feedback import store
    from rlhf.feedback.db import open_database
    from rlhf.feedback.labelers import SimulatedLabeler, run_simulated_labelers
    from rlhf.feedback.server import serve_in_background
    from rlhf.feedback.service import add_labelers, agreement, exclude_flagged, export_pairs, import_generations

    # Labeling takes seconds; an interrupted feedback stage starts over from an empty store.
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if progress:
        progress("feedback", 0, 1, "judging completions (toxicity, relevance, fluency)")
    taste = judge_generations(cfg, generations, out)
    db = open_database(str(out / "feedback.db"))
    try:
        imported = import_generations(db, generations, "demo", cfg.criterion, INSTRUCTIONS, "rank", cfg.labelers_per_item)
        names = [f"honest-{i + 1}" for i in range(cfg.honest_labelers)] + (["careless"] if cfg.bad_labeler else [])
        tokens = add_labelers(db, names)
        with db.session() as s:  # who labels what is fixed up front: the result does not depend on request timing
            store.preassign_balanced(s, store.get_project(s, "demo"), [store.get_labeler(s, n) for n in names], cfg.seed)
        labelers = [SimulatedLabeler(name, tokens[name], bad=name == "careless") for name in names]
        sim = SimulationConfig(noise=cfg.labeler_noise, scale="absolute", tie_margin=cfg.labeler_tie_margin, seed=cfg.seed)
        with serve_in_background(ServeConfig(db=str(out / "feedback.db"), port=0, admin_token="demo-admin"), db) as url:
            if progress:
                progress("feedback", 0, 1, f"labelers at work on {url}")
            simulated = run_simulated_labelers(url, imported.project_id, labelers, cfg=sim,
                                               taste=lambda prompt, texts: [taste[(prompt, t)] for t in texts])
        report = agreement(db, "demo", AgreementConfig())
        excluded = exclude_flagged(db, "demo", AgreementConfig())
        alpha_kept = agreement(db, "demo", AgreementConfig()).alpha  # over the labelers still counted
        exported = export_pairs(db, "demo", ExportConfig(out_dir=str(out), project="demo"), out_dir=out)
    finally:
        db.close()
    return {
        "items": imported.items, "labelers": names, "judgements": dict(simulated.judgements),
        "errors": list(simulated.errors), "excluded": list(excluded), "pairs": exported.pairs,
        "dropped_ties": exported.dropped_ties, "agreement": agreement_dict(report) | {"alpha_kept": alpha_kept},
    }


def agreement_dict(report) -> dict:
    """The agreement report as plain data for stages.json and the HTML report."""
    return {
        "alpha": report.alpha,
        "labelers": [
            {"name": a.labeler, "judgements": a.items, "tau": a.score, "flagged": a.flagged, "tie_rate": a.tie_rate,
             "undefined": a.undefined, "flag_reason": a.flag_reason}
            for a in report.labelers
        ],
    }


def run_demo(
    cfg: DemoConfig,
    on_stage: StageCallback | None = None,
    on_progress: ProgressCallback | None = None,
    only: str | None = None,
) -> DemoResult:
    """Run (or resume) the whole loop; `only` re-runs a single stage (its inputs must exist)."""
    setup_cpu(cfg.threads)
    root = Path(cfg.out_dir)
    if only is not None and only not in STAGES:
        raise ValueError(f"unknown stage {only!r}; choose from {', '.join(STAGES)}")
    root.mkdir(parents=True, exist_ok=True)
    stages = Stages(root / "stages.json")
    sc = stage_configs(cfg)
    ran = stages.data.get("ppo", {}).get("optimizer", "ppo")
    if stages.done("ppo") and ran != cfg.optimizer and only != "ppo":
        raise ValueError(f"{root}: stage 5 already ran with optimizer={ran}; use another --out for {cfg.optimizer}, "
                         "or re-run it with --stage ppo (then --stage evaluate)")
    settings = stage_settings(cfg, sc)
    stages.check(settings, rerun=only)
    save_config(cfg, root / "demo.yaml")

    def should_run(name: str) -> bool:
        run = name == only if only else not stages.done(name)
        if on_stage and (run or not only):
            on_stage(name, "start" if run else "skip")
        return run

    def done(name: str, result: dict, t0: float) -> None:
        stages.finish(name, result | {"seconds": round(time.perf_counter() - t0, 1)}, settings[name])
        if on_stage:
            on_stage(name, "done")

    # 1. generate completions for the train prompts
    if should_run("generate"):
        t0 = time.perf_counter()
        write_train_prompts(cfg, root / "prompts_train.jsonl")
        st = run_generate(sc["generate"], on_progress=lambda d, t: on_progress and on_progress("generate", d, t, "prompts"))
        tps = round(st.tokens_per_s, 1) if st.completions else stages.data.get("generate", {}).get("tokens_per_s")
        comps = Path(sc["generate"].out_dir) / "completions.jsonl"
        finished = [f for _, r in read_records(comps) for f in r.get("metadata", {}).get("finished", [])]
        done("generate", {"completions": str(comps), "tokens_per_s": tps,
                          "eos_rate": sum(finished) / len(finished) if finished else None}, t0)

    # 2-3. human feedback (simulated labelers through the HTTP API), agreement, export
    if should_run("feedback"):
        t0 = time.perf_counter()
        fb = run_feedback(cfg, Path(sc["generate"].out_dir) / "completions.jsonl", root / "feedback", on_progress)
        done("feedback", fb, t0)

    # 4. reward model on the exported pairs
    if should_run("reward"):
        from rlhf.reward.train import train_reward_model

        t0 = time.perf_counter()
        res = train_reward_model(
            sc["reward"], on_step=lambda s: on_progress and on_progress("reward", s.step, s.total_steps, f"loss {s.loss:.3f}"))
        done("reward", {"accuracy": res.test_accuracy, "accuracy_ci": res.test_accuracy_ci, "num_pairs": res.test_pairs,
                        "margin": res.test.mean_margin if res.test else None, "eval_accuracy": res.eval_accuracy,
                        "eval_pairs": res.eval_pairs, "train_pairs": res.train_pairs,
                        "normalization": list(res.normalization)}, t0)

    # 5a. SFT on the labelers' top-ranked completions; stage 5 starts from its adapter
    if should_run("sft"):
        from rlhf.sft import read_sft_records, train_sft

        t0 = time.perf_counter()
        out = {"skipped": True}
        if cfg.sft_first:
            records = read_sft_records(sc["sft"].data)
            res = train_sft(sc["sft"], records, on_step=lambda s, t, loss: on_progress and on_progress(
                "sft", s, t, f"loss {loss:.3f}"))
            out = {"examples": len(records), "prompts": len({p for p, _ in records}), "steps": res.steps,
                   "loss_first": res.losses[0], "loss_last": res.losses[-1], "adapter": str(res.policy_dir)}
        done("sft", out, t0)

    # 5b. the policy optimiser (PPO/RLOO/GRPO against the reward model, or DPO on the pairs), KL to the adapter-off reference
    if should_run("ppo"):
        from rlhf.policy import train_policy
        from rlhf.policy.metrics import step_line

        t0 = time.perf_counter()
        res = train_policy(sc["ppo"], on_step=lambda m: on_progress and on_progress(
            "ppo", int(m["step"]), m["steps_total"], f"{cfg.optimizer}: {step_line(m)}"))
        if not res.complete:
            raise StageIncomplete(
                f"{cfg.optimizer} stopped by the clock after {res.steps} steps ({res.stop_reason}); the stage is not done. "
                f"Re-run to resume it from its checkpoint, or set {cfg.optimizer}.time_limit_min=null.")
        done("ppo", {"optimizer": cfg.optimizer, "steps": res.steps, "stop_reason": res.stop_reason,
                     "policy": str(res.policy_dir), "metrics": str(res.metrics_path), "closing": res.closing}, t0)

    # 6. evaluate base vs aligned on held-out prompts; the report
    result: EvaluationResult | None = None
    if should_run("evaluate"):
        t0 = time.perf_counter()
        history = [r for _, r in read_records(Path(sc["ppo"].out_dir) / "metrics.jsonl")]
        extra = {
            "reward_model": stages.data.get("reward"), "agreement": stages.data.get("feedback", {}).get("agreement"),
            "ppo_history": history, "optimizer": cfg.optimizer, "stages": stages.data,
        }
        result = run_evaluate(sc["evaluate"], extra_sections=extra,
                              on_progress=lambda s, d, t: on_progress and on_progress("evaluate", d, t, s))
        s_ = result.summary
        done("evaluate", {"report": str(result.report_path), "verdict": s_["verdict"]["status"],
                          "reasons": s_["verdict"]["reasons"], "target": s_["target"], "target_change": s_["target_change"],
                          "toxicity_before": s_["toxicity_before"], "toxicity_after": s_["toxicity_after"],
                          "kl": s_["kl"], "reward_hacking": s_["reward_hacking"]["status"]}, t0)
    summary_path = Path(sc["evaluate"].out_dir) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return DemoResult(root, Path(sc["evaluate"].out_dir) / "report.html", summary, stages.data)
