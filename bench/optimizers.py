"""PPO, DPO, RLOO and GRPO side by side on the demo's own pairs and prompts, judged like the demo.

Takes a demo run folder (its generate, feedback and reward stages done; `--prepare` runs them first) and
trains each optimiser with the demo's settings for it (`DemoConfig.ppo/dpo/rloo/grpo`, `--set` to change
them): PPO, RLOO and GRPO against the demo's reward model on its train prompts, DPO on its exported pairs.
Each aligned policy then goes through `rlhf.evaluate.run.run_evaluate` with the demo's evaluation settings
(held-out prompts, gold scorers, learned reward, judge), and the bench prints, per optimiser: training wall
time, the evaluation's per-split aligned - base paired differences with 95% bootstrap CIs (red-team toxicity
and learned reward, helpful relevance, fluency and EOS rate), the KL to the reference at the end, the
evaluation's own verdict with its reasons, and a seeded random sample of base vs aligned completions. When the
demo run itself trained one of them with the same settings, that stage and its evaluation are reused.

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
from rlhf.evaluate.run import run_evaluate
from rlhf.policy import train_policy

EARLIER = ("generate", "feedback", "reward")


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


def sample_pairs(eval_dir: Path, k: int, seed: int) -> list[dict]:
    base = [json.loads(line) for line in (eval_dir / "completions_base.jsonl").read_text().splitlines()]
    aligned = [json.loads(line) for line in (eval_dir / "completions_aligned.jsonl").read_text().splitlines()]
    idx = random.Random(seed).sample(range(len(base)), min(k, len(base)))
    return [{"prompt": base[i]["prompt"], "base": base[i]["completion"], "aligned": aligned[i]["completion"]} for i in idx]


def reused_stage(cfg: DemoConfig, name: str, stages: dict) -> dict | None:
    """The demo run's own policy stage and evaluation, when it trained this optimiser with the same settings
    (saving its training time); None otherwise."""
    root = Path(cfg.out_dir)
    if cfg.optimizer != name or not {"ppo", "evaluate"} <= stages.keys():  # "ppo": the policy stage, any optimiser
        return None
    policy_cfg = stage_configs(cfg)["ppo"]
    saved = root / name / f"{name}.yaml"
    if not saved.exists() or load_config(type(policy_cfg), saved) != policy_cfg:
        return None
    res = json.loads((root / name / "result.json").read_text())
    if not res.get("complete"):
        return None
    return {"res": res, "train_seconds": stages["ppo"]["seconds"], "eval_dir": root / "evaluate"}


def run_one(cfg: DemoConfig, name: str, out: Path, stages: dict) -> dict:
    reused = reused_stage(cfg, name, stages)
    if reused:
        print(f"  {name}: reusing the demo run's own {name} stage and evaluation (same settings)", flush=True)
        return describe(cfg, name, reused["res"], reused["train_seconds"], None, reused["eval_dir"], reused=True)
    cfg = dataclasses.replace(cfg, optimizer=name)
    sc = stage_configs(cfg)
    policy_cfg = dataclasses.replace(sc["ppo"], out_dir=str(out / name))
    eval_cfg = dataclasses.replace(sc["evaluate"], aligned=str(out / name), out_dir=str(out / name / "evaluate"))

    def progress(m: dict) -> None:
        from rlhf.policy.metrics import step_line

        print(f"  {name} step {m['step']}/{m['steps_total']}  {step_line(m)}", flush=True)

    t0 = time.perf_counter()
    train_policy(policy_cfg, on_step=progress)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    run_evaluate(eval_cfg)
    res = json.loads((Path(policy_cfg.out_dir) / "result.json").read_text())
    return describe(cfg, name, res, train_s, time.perf_counter() - t1, Path(eval_cfg.out_dir), reused=False)


def describe(cfg: DemoConfig, name: str, res: dict, train_s: float, eval_s: float | None, eval_dir: Path,
             reused: bool) -> dict:
    summary = json.loads((eval_dir / "summary.json").read_text())
    kl = summary.get("kl")
    kl_train = ((res.get("closing") if name == "dpo" else res.get("final")) or {}).get("kl/mean")
    return {
        "optimizer": name, "steps": res["steps"], "stop_reason": res["stop_reason"], "complete": res["complete"],
        "reused_from_demo": reused, "train_seconds": train_s, "eval_seconds": eval_s,
        "kl_train_end": kl_train, "kl_eval_to_base": kl.get("value") if isinstance(kl, dict) else kl,
        "kl_target": kl.get("target") if isinstance(kl, dict) else None,
        "splits": {sp: {k: {f: m[f] for f in ("base", "aligned", "diff", "higher_is_better", "kind")}
                        for k, m in v["metrics"].items()} for sp, v in summary["splits"].items()},
        "win_rate": summary.get("win_rate"), "verdict": summary.get("verdict"),
        "reward_hacking": summary.get("reward_hacking"),
        "examples": sample_pairs(eval_dir, 4, cfg.seed),
    }


def cell(r: dict, split: str, key: str) -> str:
    m = r["splits"].get(split, {}).get(key)
    if m is None:
        return "n/a"
    d = m["diff"]
    return f"{m['base']:.3f}->{m['aligned']:.3f} {d['value']:+.3f} [{d['low']:+.3f},{d['high']:+.3f}]"


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
        results.append(run_one(cfg, name.strip(), out, stages))
        write_json(out / "optimizers.json", {"machine": machine(f"torch {torch.__version__}", f"{args.threads} threads"),
                                             "reward_model_accuracy": stages["reward"].get("accuracy"),
                                             "pairs": stages["feedback"].get("pairs"), "results": results})

    print(f"\nmachine: {machine(f'torch {torch.__version__}', f'{args.threads} threads')}")
    print(f"demo run {run}: {stages['feedback'].get('pairs')} pairs, reward model held-out accuracy "
          f"{stages['reward'].get('accuracy')}; evaluation on the eval split, same seed for every optimiser")
    rm = next((k for k in (results[0]["splits"].get("redteam", {}) if results else {}) if k.startswith("rm:")), None)
    cols = [("redteam", "toxicity", "red-team toxicity"), ("redteam", rm, "red-team learned reward"),
            ("helpful", "relevance", "helpful relevance"), ("helpful", "fluency", "helpful fluency"),
            ("helpful", "eos_rate", "helpful EOS rate")]
    print("aligned vs base on the held-out prompts, per split: base -> aligned, diff [95% paired bootstrap CI]")
    for r in results:
        kl_end = "n/a" if r["kl_train_end"] is None else f"{r['kl_train_end']:.2f}"
        kl_eval = "n/a" if r["kl_eval_to_base"] is None else f"{r['kl_eval_to_base']:.2f}"
        v = r["verdict"] or {}
        own = " (the demo run's own stage)" if r["reused_from_demo"] else ""
        print(f"\n{r['optimizer']}: {r['steps']} steps ({r['stop_reason']}{'' if r['complete'] else ', INCOMPLETE'}), "
              f"train {r['train_seconds'] / 60:.1f} min{own}; KL last batch {kl_end}, "
              f"KL on the evaluation's samples {kl_eval} (target {r['kl_target'] or 'none'}); verdict: {v.get('status', 'n/a')}")
        for split, key, label in cols:
            print(f"  {label:<26}{cell(r, split, key) if key else 'n/a'}")
        for reason in v.get("reasons", []):
            print(f"  - {reason}")
    for r in results:
        print(f"\n{r['optimizer']}: seeded sample of base vs aligned completions")
        for ex in r["examples"]:
            print(f"  prompt : {ex['prompt'][:100]!r}\n  base   : {ex['base'][:140]!r}\n  aligned: {ex['aligned'][:140]!r}")
    print(f"\nper-optimiser folders and optimizers.json -> {out}")


if __name__ == "__main__":
    main()
