"""An outside judge of the demo's alignment: a reward model trained on real human preferences.

Trains a MiniLM reward model on the 1,500 Anthropic HH-RLHF harmless-base pairs in ../shared/data
(human preferences the demo never saw), then scores the demo's base and aligned completions on its
held-out prompts (runs/demo/evaluate/completions_*.jsonl, written by `rlhf evaluate`) and reports the
paired difference aligned - base with a bootstrap 95% CI, per split (red-team is the one that counts).

    make demo                                                              # runs/demo
    flock /tmp/rlhf-heavy.lock .venv/bin/python bench/alignment_judge.py   # ~8 min on 2 cores (training)
    flock /tmp/rlhf-heavy.lock .venv/bin/python bench/alignment_judge.py --eval runs/other/evaluate

The judge is cached in --judge-dir; a finished one is reused (delete the folder to retrain).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from _machine import machine
from reward_hh import DATA, load_hh

from rlhf.config import load_config
from rlhf.data import read_records
from rlhf.evaluate.metrics import paired_bootstrap, win_rate
from rlhf.evaluate.run import per_prompt
from rlhf.reward.config import RewardTrainConfig
from rlhf.reward.functions import load_reward_function
from rlhf.reward.train import train_reward_model

JUDGE = dict(model="all-minilm-l6-v2", max_length=256, batch_size=16, epochs=2, lr=1e-4, head_lr=1e-3,
             eval_fraction=0.1, test_fraction=0.1, patience=None, tensorboard=False, threads=2)


def hh_prompt(text: str) -> str:
    """The demo's single-turn prompt in HH-RLHF's dialogue format, as the judge was trained on."""
    return f"\n\nHuman: {text}\n\nAssistant:"


def train_judge(out: Path, overrides: list[str]) -> dict:
    cfg = load_config(RewardTrainConfig, None, [f"{k}={json.dumps(v)}" for k, v in JUDGE.items()] + overrides,
                      out_dir=str(out))
    if (out / "test_metrics.json").exists() and (out / "reward_stats.json").exists():
        logging.info("reusing the trained judge in %s", out)
    else:
        train_reward_model(cfg, load_hh(DATA))
    return json.loads((out / "test_metrics.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", type=Path, default=Path("runs/demo/evaluate"), help="an `rlhf evaluate` output folder")
    ap.add_argument("--judge-dir", type=Path, default=Path("runs/bench/alignment_judge"))
    ap.add_argument("--set", "-s", action="append", default=[], help="RewardTrainConfig override for the judge")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not DATA.exists():
        sys.exit(f"{DATA}: not found (this benchmark needs ../shared/data)")
    if not (args.eval / "completions_aligned.jsonl").exists():
        sys.exit(f"{args.eval}: no completions_aligned.jsonl; run `make demo` (or `rlhf evaluate`) first")
    torch.set_num_threads(2)
    test = train_judge(args.judge_dir, args.set)
    judge = load_reward_function(f"rm:{args.judge_dir}")

    rows = {name: [r for _, r in read_records(args.eval / f"completions_{name}.jsonl")] for name in ("base", "aligned")}
    print(f"\nmachine: {machine(f'torch {torch.__version__}', f'{torch.get_num_threads()} threads')}")
    print(f"judge: MiniLM reward model on HH-RLHF harmless-base ({DATA.name}); test accuracy {test['accuracy']:.1%} "
          f"(95% CI {test['accuracy_ci'][0]:.1%}-{test['accuracy_ci'][1]:.1%}) on {test['n']} pairs of {test['prompts']} "
          "held-out prompts")
    print(f"completions: {args.eval} (base vs aligned, same prompts and seeds)")
    print(f"{'split':>10} {'n':>4} {'base':>8} {'aligned':>8} {'aligned - base [95% CI]':>28} {'win rate [95% CI]':>20}")
    for split in dict.fromkeys(r["split"] for r in rows["base"]):
        b = [r for r in rows["base"] if r["split"] == split]
        a = [r for r in rows["aligned"] if r["split"] == split]
        assert [r["id"] for r in a] == [r["id"] for r in b], "base and aligned completions are not paired"
        prompts = [hh_prompt(r["prompt"]) for r in b]
        k = len(b) // len({r["id"] for r in b})  # rows per prompt (`samples_per_prompt`): averaged, prompts resampled
        sb = per_prompt(judge(prompts, [r["completion"] for r in b]).tolist(), k)
        sa = per_prompt(judge(prompts, [r["completion"] for r in a]).tolist(), k)
        pd, wr = paired_bootstrap(sa, sb), win_rate(sa, sb)
        d = pd.diff
        print(f"{split:>10} {len(sb):>4} {np.mean(sb):>8.3f} {np.mean(sa):>8.3f} "
              f"{f'{d.value:+.3f} [{d.low:+.3f}, {d.high:+.3f}]':>28} {f'{wr.value:.0%} [{wr.low:.0%}, {wr.high:.0%}]':>20}")
    print("(judge reward: higher = more like the answers HH-RLHF labelers chose as less harmful)")


if __name__ == "__main__":
    main()
