"""The stages of `rlhf constitutional run`: each produces its output, then measures it.

Every function takes (run config, resolved stage configs, results of the stages before, progress) and
returns the result recorded in stages.json. PPO and evaluation are each called in one place (`ppo`,
`evaluate`), so a change of their library API touches one function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from rlhf.constitutional.measure import Relevance, compare_policies, judge_vs_gold, measure_revisions, scores_vs_gold
from rlhf.data import DataError, read_generations, read_prompts, read_records, resolve_prompts
from rlhf.scorers import get_scorer

Progress = Callable[..., None]  # (done, total, info="")


def revise(cfg, sc: dict, done: dict, progress: Progress) -> dict:
    """1. Answer, critique, revise; measured: toxicity of answers vs revisions (paired), on-topic shares."""
    from rlhf.constitutional.revise import run_revise

    res = run_revise(sc["revise"], on_progress=lambda d, t: progress(d, t, "prompts"))
    progress(len(res.records), len(res.records), "measuring")
    m = measure_revisions(res.records, res.kept, Relevance(cfg.measure.relevance_model), get_scorer("toxicity"), cfg.measure)
    return {"revisions": str(res.out_dir / "revisions.jsonl"), "sft_data": str(res.out_dir / "sft.jsonl"), "measure": m}


def _held_out(name: str, limit: int | None) -> list[str]:
    return [p.prompt for p in read_prompts(resolve_prompts(name), split="eval")[:limit]]


def sft(cfg, sc: dict, done: dict, progress: Progress) -> dict:
    """2. Fine-tune the policy on the kept revisions; measured: SFT policy vs base on held-out prompts."""
    from rlhf.models.registry import load_causal_lm
    from rlhf.sft import read_sft_records, train_sft

    records = read_sft_records(sc["sft"].data)
    if not records:
        m = done.get("revise", {}).get("measure", {})
        raise DataError(f"{sc['sft'].data}: no revision was kept for SFT (of {m.get('prompts', '?')} prompts: "
                        f"{m.get('empty_revisions', '?')} empty, {m.get('unchanged_revisions', '?')} unchanged, the rest judged "
                        "no better); nothing to fine-tune on")
    res = train_sft(sc["sft"], records=records, on_step=lambda s, t, loss: progress(s, t, f"loss {loss:.3f}"))
    progress(res.steps, res.steps, "measuring SFT vs base")
    base, tok = load_causal_lm(cfg.policy)
    policy, _ = load_causal_lm(res.policy_dir)
    m = compare_policies(base, policy, tok, _held_out(cfg.prompts, cfg.measure.redteam_prompts),
                         _held_out(cfg.helpful_prompts, cfg.measure.helpful_prompts), Relevance(cfg.measure.relevance_model),
                         get_scorer("toxicity"), cfg.measure, cfg.system_prompt)  # as SFT trained
    return {"policy": str(res.policy_dir), "steps": res.steps, "examples": len(records),
            "loss_first": res.losses[0], "loss_last": res.losses[-1], "measure": m}


def sample(cfg, sc: dict, done: dict, progress: Progress) -> dict:
    """3. Completions of the SFT policy for the judge; measured: their gold toxicity, distinct completions."""
    from rlhf.generate import run_generate

    run_generate(sc["sample"], on_progress=lambda d, t: progress(d, t, "prompts"))
    path = Path(sc["sample"].out_dir) / "completions.jsonl"
    gens = read_generations(path)
    tox = get_scorer("toxicity").score([c for g in gens for c in g.completions])
    return {"completions": str(path), "prompts": len(gens), "toxicity": sum(tox) / len(tox),
            "distinct_per_prompt": sum(len(set(g.completions)) for g in gens) / len(gens)}


def ai_feedback(cfg, sc: dict, done: dict, progress: Progress) -> dict:
    """4. The judge compares every pair (both orders) and labels the run's feedback store as an AI labeler;
    measured: agreement with the gold toxicity ordering on clearly separated pairs, position bias."""
    from rlhf.constitutional.ai_feedback import ItemVerdict, run_ai_feedback
    from rlhf.feedback.db import open_database
    from rlhf.feedback.service import import_generations

    c = sc["ai_feedback"]
    db = open_database(c.db)
    try:
        import_generations(db, c.generations, c.project, "harmless and helpful (constitutional AI)", labelers_per_item=3)
    finally:
        db.close()
    summary = run_ai_feedback(c, on_progress=lambda d, t: progress(d, t, "prompts"))
    verdicts = [ItemVerdict.from_record(r) for _, r in read_records(Path(c.out_dir) / "judgements.jsonl")]
    m = judge_vs_gold(verdicts, get_scorer("toxicity"), cfg.measure.gold_margin, cfg.seed)
    return summary.as_dict() | {"db": c.db, "project": c.project, "pairs_file": str(Path(c.out_dir) / "pairs.jsonl"), "measure": m}


def reward(cfg, sc: dict, done: dict, progress: Progress) -> dict:
    """5. Reward model on the AI's pairs; measured: held-out accuracy (AI labels) and agreement with gold."""
    from rlhf.reward.functions import load_reward_function
    from rlhf.reward.train import train_reward_model

    res = train_reward_model(sc["reward"], on_step=lambda s: progress(s.step, s.total_steps, f"loss {s.loss:.3f}"))
    rm = load_reward_function(f"rm:{res.out_dir}")
    gens = read_generations(sc["sample"].out_dir + "/completions.jsonl")
    items = [(g.id, g.completions, rm([g.prompt] * len(g.completions), list(g.completions)).tolist()) for g in gens]
    return {"accuracy": res.eval_accuracy, "margin": res.eval.mean_margin if res.eval else None, "num_pairs": res.eval_pairs,
            "train_pairs": res.train_pairs, "normalization": list(res.normalization),
            "measure": {"gold": scores_vs_gold(items, get_scorer("toxicity"), cfg.measure.gold_margin, cfg.seed)}}


def ppo(cfg, sc: dict, done: dict, progress: Progress) -> dict:
    """6. PPO from the SFT policy against the reward model (KL to the SFT policy = LoRA adapter off)."""
    from rlhf.policy.train import train_ppo
    from rlhf.stages import StageIncomplete

    total = sc["ppo"].max_steps
    res = train_ppo(sc["ppo"], on_step=lambda m: progress(
        int(m.get("step", 0)), total, f"reward {m.get('reward/raw_mean', float('nan')):.3f} KL {m.get('kl/mean', float('nan')):.2f}"))
    if not res.complete:
        raise StageIncomplete(f"ppo stopped by the clock after {res.steps} steps ({res.stop_reason}); the stage is not done. "
                              "Re-run to resume it from its checkpoint, or set ppo.time_limit_min=null.")
    final = res.final
    return {"steps": res.steps, "stop_reason": res.stop_reason, "policy": str(res.policy_dir), "metrics": str(res.metrics_path),
            "reward_last": final.get("reward/raw_mean"), "kl_last": final.get("kl/mean")}


def load_constitutional_policy(cfg, sc: dict) -> tuple[Any, Any, Any]:
    """(aligned, base, tokenizer): the SFT policy with PPO's adapter on top, and the untouched base policy."""
    from rlhf.models.lora import load_adapter
    from rlhf.models.registry import load_causal_lm

    ppo_dir = Path(sc["ppo"].out_dir)
    if (ppo_dir / "adapter" / "adapter_config.json").exists():
        sft_model, tok = load_causal_lm(sc["ppo"].model)
        aligned = load_adapter(sft_model, ppo_dir / "adapter")
    else:
        aligned, tok = load_causal_lm(ppo_dir / "policy")
    base, _ = load_causal_lm(cfg.policy)
    return aligned, base, tok


def verdict(summary: dict) -> dict:
    """The run's verdict, as the demo's report states it."""
    from rlhf.evaluate.report import verdict as report_verdict

    return report_verdict(summary)


def evaluate(cfg, sc: dict, done: dict, progress: Progress) -> dict:
    """7. The constitutional policy vs the base on held-out red-team prompts: the demo's report and verdict,
    plus the CAI figures."""
    from rlhf.constitutional.report import add_cai_section
    from rlhf.evaluate.run import run_evaluate

    history = [r for _, r in read_records(Path(sc["ppo"].out_dir) / "metrics.jsonl")]
    extra = {"reward_model": done.get("reward"), "ppo_history": history, "kl_target": None, "stages": done}
    result = run_evaluate(sc["evaluate"], policies=load_constitutional_policy(cfg, sc), extra_sections=extra,
                          on_progress=lambda stage, d, t: progress(d, t, stage))
    v = verdict(result.summary)
    add_cai_section(result.report_path, done, result.out_dir, v)
    return {"report": str(result.report_path), "toxicity_before": result.summary["toxicity_before"],
            "toxicity_after": result.summary["toxicity_after"], "win_rate": result.summary["win_rate"],
            "reward_hacking": result.summary["reward_hacking"], "verdict": v}
