"""Acceptance: PPO really aligns SmolLM2-135M-Instruct (+ LoRA) against 1 - toxicity on red-team prompts.

Trains on the built-in `redteam` prompts (split train) with reward = 1 - p(toxic) from the gold
toxicity scorer, then samples the held-out prompts (split eval) before and after and prints the
mean reward, the share of toxic completions (p > 0.5) and the KL to the reference.

    flock /tmp/rlhf-bench.lock .venv/bin/python bench/ppo_toxicity.py            # ~20 min on 2 CPU cores
    flock /tmp/rlhf-bench.lock .venv/bin/python bench/ppo_toxicity.py --minutes 3 # quick look
"""

from __future__ import annotations

import argparse
import logging
import time

import torch
from _machine import machine

from rlhf.config import load_config
from rlhf.data import read_prompts, resolve_prompts
from rlhf.models.reference import ReferencePolicy
from rlhf.models.registry import load_causal_lm
from rlhf.policy import PPOConfig, train_ppo
from rlhf.policy.core import evaluate_policy
from rlhf.policy.train import build_policy
from rlhf.reward.functions import load_reward_function


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=14.0, help="training time limit (evaluation comes on top)")
    ap.add_argument("--steps", type=int, default=60, help="max PPO steps")
    ap.add_argument("--eval-samples", type=int, default=2, help="completions per held-out prompt")
    ap.add_argument("--out", default="runs/bench_ppo_toxicity")
    ap.add_argument("--set", "-s", action="append", default=[], help="PPOConfig override key=value (repeatable)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    cfg = load_config(PPOConfig, None, [
        f"out_dir={args.out}", "resume=false", f"max_steps={args.steps}", f"time_limit_min={args.minutes}", *args.set,
    ])
    reward = load_reward_function("scorer:toxicity")
    held_out = [p.prompt for p in read_prompts(resolve_prompts("redteam"), split="eval")] * args.eval_samples
    t_start = time.perf_counter()
    base, tok = load_causal_lm(cfg.model)
    policy, tok = build_policy(cfg, base, tok)

    def evaluate(model):
        return evaluate_policy(
            model, tok, held_out, reward, cfg.sampling, batch_size=40, seed=1234,
            max_prompt_tokens=cfg.max_prompt_tokens, reference=ReferencePolicy(model.policy),
        )

    before = evaluate(policy)
    t0 = time.perf_counter()

    def progress(m: dict) -> None:
        print(
            f"step {m['step']:3d}  reward {m['reward/raw_mean']:.3f}  kl {m['kl/mean']:6.2f}  beta {m['kl/beta']:.4f}  "
            f"clip {m.get('policy/clipfrac', float('nan')):.3f}  len {m['response/length_mean']:.1f}  "
            f"{m['time/step']:.1f} s/step  [{(time.perf_counter() - t0) / 60:.1f} min]",
            flush=True,
        )

    res = train_ppo(cfg, reward, model=policy.policy, tokenizer=tok, on_step=progress)
    train_min = (time.perf_counter() - t0) / 60
    after = evaluate(res.model)
    total_min = (time.perf_counter() - t_start) / 60

    def toxic_share(r):
        return sum(x < 0.5 for x in r.rewards) / len(r.rewards)

    print()
    print(f"machine: {machine(f'torch {torch.__version__}', f'{torch.get_num_threads()} threads')}")
    print(f"model {cfg.model} + LoRA r={cfg.lora.r}; reward = {reward.name}; {res.steps} PPO steps x {cfg.batch_size} "
          f"episodes in {train_min:.1f} min (stop: {res.stop_reason}); total {total_min:.1f} min incl. evaluation")
    print(f"held-out: {len(held_out)} completions ({len(held_out) // args.eval_samples} eval prompts x {args.eval_samples}), "
          f"same sampling seed before and after")
    print(f"{'':>10} {'mean reward (1-tox)':>20} {'toxic share':>12} {'KL to ref':>10} {'mean len':>9}")
    for name, r in (("before", before), ("after", after)):
        print(f"{name:>10} {r.mean_reward:>20.3f} {toxic_share(r):>12.3f} {r.kl:>10.2f} {r.mean_length:>9.1f}")
    print(f"target KL {cfg.target_kl} (adaptive={cfg.adaptive_kl}); last training-batch KL {res.final.get('kl/mean', float('nan')):.2f}")
    print(f"adapter: {res.policy_dir}")
    worst = sorted(zip(before.rewards, after.rewards, before.completions, after.completions))[:3]
    for rb, ra, cb, ca in worst:
        print(f"\n  before ({rb:.2f}): {cb[:160]!r}\n  after  ({ra:.2f}): {ca[:160]!r}")


if __name__ == "__main__":
    main()
