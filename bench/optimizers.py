"""PPO, DPO, RLOO and GRPO side by side on the demo's own pairs and prompts, judged like the demo.

Takes a demo run folder (its generate, feedback and reward stages done; `--prepare` runs them first) and
trains each optimiser with the demo's settings for it (`DemoConfig.ppo/dpo/rloo/grpo`, `--set` to change
them): PPO, RLOO and GRPO against the demo's reward model on its train prompts, DPO on its exported pairs.
Each aligned policy then goes through `rlhf.evaluate.run.run_evaluate` with the demo's evaluation settings
(held-out prompts, gold scorers, learned reward, judge), and the bench prints, per optimiser: training wall
time, the aligned - base paired differences with 95% bootstrap CIs, the KL to the reference at the end,
the evaluation's own verdict / hacking check, and a seeded random sample of base vs aligned completions.

    flock /tmp/rlhf-heavy.lock .venv/bin/python bench/optimizers.py runs/demo --prepare
    .venv/bin/python bench/optimizers.py runs/demo --optimizers dpo,rloo --set rloo.max_steps=10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import time
from pathlib import Path

import torch
from _machine import machine

from rlhf.config import load_config, save_config
from rlhf.data import write_json
from rlhf.demo import DemoConfig, run_demo, stage_configs
from rlhf.evaluate.metrics import bootstrap_mean
from rlhf.evaluate.run import run_evaluate
from rlhf.policy import train_policy

EARLIER = ("generate", "feedback", "reward")
# Per-prompt score columns of completions_{base,aligned}.jsonl and which way is better.
LOWER_IS_BETTER = {"toxicity"}


def prepare(cfg: DemoConfig) -> dict:
    """The demo's stages up to the reward model, run where missing; returns stages.json."""
    stages_path = Path(cfg.out_dir) / "stages.json"
    done = json.loads(stages_path.read_text()) if stages_path.exists() else {}
    for stage in EARLIER:
        if stage not in done:
            logging.info("running the demo's %s stage into %s", stage, cfg.out_dir)
            run_demo(cfg, only=stage)
            done = json.loads(stages_path.read_text())
    return done


def paired_deltas(eval_dir: Path, seed: int) -> dict[str, dict]:
    """aligned - base per prompt for every score column, oriented so positive is better, with a bootstrap CI."""
    rows = {n: [json.loads(line) for line in (eval_dir / f"completions_{n}.jsonl").read_text().splitlines()]
            for n in ("base", "aligned")}
    keys = [k for k, v in rows["base"][0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {}
    for k in keys:
        sign = -1.0 if k in LOWER_IS_BETTER else 1.0
        diffs = [sign * (a[k] - b[k]) for a, b in zip(rows["aligned"], rows["base"])]
        base_mean = sum(b[k] for b in rows["base"]) / len(rows["base"])
        aligned_mean = sum(a[k] for a in rows["aligned"]) / len(rows["aligned"])
        out[k] = {"base": base_mean, "aligned": aligned_mean, "better_by": bootstrap_mean(diffs, seed=seed).as_dict(),
                  "lower_is_better": k in LOWER_IS_BETTER}
    return out


def sample_pairs(eval_dir: Path, k: int, seed: int) -> list[dict]:
    base = [json.loads(line) for line in (eval_dir / "completions_base.jsonl").read_text().splitlines()]
    aligned = [json.loads(line) for line in (eval_dir / "completions_aligned.jsonl").read_text().splitlines()]
    idx = random.Random(seed).sample(range(len(base)), min(k, len(base)))
    return [{"prompt": base[i]["prompt"], "base": base[i]["completion"], "aligned": aligned[i]["completion"]} for i in idx]


def verdict_line(summary: dict) -> str:
    """Whatever verdict the evaluation returned (its rules are the demo's), else its reward-hacking check."""
    v = summary.get("verdict")
    if isinstance(v, dict):
        return " ".join(str(v[k]) for k in ("status", "title", "label", "text") if v.get(k)) or json.dumps(v)[:200]
    if v is not None:
        return str(v)
    hack = summary.get("reward_hacking") or {}
    flagged = hack.get("flagged") if isinstance(hack, dict) else getattr(hack, "flagged", None)
    return f"(no verdict in this evaluation) reward-hacking check: {'FLAGGED' if flagged else 'passed'} {hack.get('reasons', '') if isinstance(hack, dict) else ''}"


def run_one(cfg: DemoConfig, name: str, out: Path) -> dict:
    cfg = dataclasses.replace(cfg, optimizer=name)
    sc = stage_configs(cfg)
    policy_cfg = dataclasses.replace(sc["ppo"], out_dir=str(out / name))
    eval_cfg = dataclasses.replace(sc["evaluate"], aligned=str(out / name), out_dir=str(out / name / "evaluate"))

    def progress(m: dict) -> None:
        from rlhf.policy.metrics import step_line

        print(f"  {name} step {m['step']}/{m['steps_total']}  {step_line(m)}", flush=True)

    t0 = time.perf_counter()
    res = train_policy(policy_cfg, on_step=progress)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    ev = run_evaluate(eval_cfg)
    eval_s = time.perf_counter() - t1
    summary = ev.summary
    kl_eval = summary.get("kl", {}).get("value") if isinstance(summary.get("kl"), dict) else \
        summary["policies"]["aligned"].get("kl_to_base")
    kl_train = res.closing.get("kl/mean") if name == "dpo" else res.final.get("kl/mean")
    return {
        "optimizer": name, "steps": res.steps, "stop_reason": res.stop_reason, "complete": res.complete,
        "train_seconds": train_s, "eval_seconds": eval_s,
        "episodes_or_pairs": res.final.get("episodes", res.final.get("pairs")),
        "kl_train_end": kl_train, "kl_eval_to_base": kl_eval, "kl_target": eval_cfg.kl_target,
        "deltas": paired_deltas(Path(eval_cfg.out_dir), cfg.seed), "win_rate": summary.get("win_rate"),
        "verdict": verdict_line(summary), "closing": res.closing,
        "examples": sample_pairs(Path(eval_cfg.out_dir), 4, cfg.seed),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="demo run folder (demo.yaml + generate/feedback/reward stages)")
    ap.add_argument("--prepare", action="store_true", help="run the demo's generate, feedback and reward stages if missing")
    ap.add_argument("--optimizers", default="ppo,dpo,rloo,grpo")
    ap.add_argument("--out", default=None, help="output folder (default: RUN/bench_optimizers)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", "-s", action="append", default=[], help="DemoConfig override, e.g. rloo.max_steps=10")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)

    run = Path(args.run)
    saved = run / "demo.yaml"
    cfg = load_config(DemoConfig, saved if saved.exists() else None, [*args.set, f"out_dir={run}", f"threads={args.threads}"])
    if args.prepare:
        prepare(cfg)
    stages = json.loads((run / "stages.json").read_text()) if (run / "stages.json").exists() else {}
    missing = [s for s in EARLIER if s not in stages]
    if missing:
        raise SystemExit(f"{run}: stages {', '.join(missing)} not done; pass --prepare to run them")
    out = Path(args.out or run / "bench_optimizers")
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "demo.yaml")

    results = []
    for name in args.optimizers.split(","):
        print(f"\n== {name}", flush=True)
        results.append(run_one(cfg, name.strip(), out))
        write_json(out / "optimizers.json", {"machine": machine(f"torch {torch.__version__}", f"{args.threads} threads"),
                                             "reward_model_accuracy": stages["reward"].get("accuracy"),
                                             "pairs": stages["feedback"].get("pairs"), "results": results})

    print(f"\nmachine: {machine(f'torch {torch.__version__}', f'{args.threads} threads')}")
    print(f"demo run {run}: {stages['feedback'].get('pairs')} pairs, reward model held-out accuracy "
          f"{stages['reward'].get('accuracy')}; evaluation on the eval split, same seed for every optimiser")
    cols = ("toxicity", "sentiment", cfg.evaluate.judge, f"rm:{run / 'reward'}")
    print(f"{'optimizer':>9} {'steps':>5} {'train min':>9} {'KL end':>7} {'KL eval':>7}  " +
          "  ".join(f"{c.split('/')[-1][:18]:>26}" for c in cols))
    for r in results:
        cells = []
        for c in cols:
            d = r["deltas"].get(c) or r["deltas"].get("judge" if c == cfg.evaluate.judge else c)
            cells.append("n/a" if d is None else
                         f"{d['better_by']['value']:+.3f} [{d['better_by']['low']:+.3f}, {d['better_by']['high']:+.3f}]")
        kl_end = "n/a" if r["kl_train_end"] is None else f"{r['kl_train_end']:.2f}"
        kl_eval = "n/a" if r["kl_eval_to_base"] is None else f"{r['kl_eval_to_base']:.2f}"
        print(f"{r['optimizer']:>9} {r['steps']:>5} {r['train_seconds'] / 60:>9.1f} {kl_end:>7} {kl_eval:>7}  " +
              "  ".join(f"{c:>26}" for c in cells) + ("" if r["complete"] else "  INCOMPLETE"))
    print("(columns: aligned - base per prompt, signed so + is better (toxicity: base - aligned), mean [95% CI];"
          " KL end: last training batch (DPO: its held-out prompts), KL eval: on the evaluation's samples)")
    for r in results:
        wr = r["win_rate"] or {}
        print(f"\n{r['optimizer']}: win rate {wr.get('value', float('nan')):.0%} [{wr.get('low', float('nan')):.0%}, "
              f"{wr.get('high', float('nan')):.0%}]; verdict: {r['verdict']}")
        for ex in r["examples"]:
            print(f"  prompt : {ex['prompt'][:100]!r}\n  base   : {ex['base'][:140]!r}\n  aligned: {ex['aligned'][:140]!r}")
    print(f"\nper-optimiser folders and optimizers.json -> {out}")


if __name__ == "__main__":
    main()
