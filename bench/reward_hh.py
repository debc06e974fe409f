"""Acceptance run: a MiniLM reward model on 1,500 human preference pairs from Anthropic HH-RLHF (harmless-base).

    flock /tmp/rlhf-bench.lock .venv/bin/python bench/reward_hh.py [--set key=value ...]

The first 1,200 pairs train (10% of their prompts are held out for early stopping / checkpoint
choice), the last 300 are scored only once, at the end. Each line holds two full dialogues; the
final Assistant turn is the response and everything before it is the prompt.
Published pairwise accuracies on HH-RLHF for scale: DeBERTa-v3-base 54.5%, -large 55.6%, -large-v2 69.3%.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import torch
from _machine import machine

from rlhf.config import load_config
from rlhf.reward.config import RewardTrainConfig
from rlhf.reward.model import RewardModel
from rlhf.reward.train import encode, evaluate, train_reward_model
from rlhf.types import PreferencePair

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base.part1.jsonl.gz"
TURN = "\n\nAssistant:"
DEFAULTS = dict(model="all-minilm-l6-v2", out_dir="runs/bench/reward_hh", max_length=256, batch_size=16,
                epochs=2, lr=1e-4, head_lr=1e-3, eval_fraction=0.1, test_fraction=0.0, eval_every=0, patience=None, resume=False,
                tensorboard=False, threads=2)


def split_dialogue(text: str) -> tuple[str, str]:
    i = text.rfind(TURN)
    return text[: i + len(TURN)], text[i + len(TURN) :].strip()


def load_hh(path: Path) -> list[PreferencePair]:
    pairs = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            prompt, chosen = split_dialogue(row["chosen"])
            _, rejected = split_dialogue(row["rejected"])  # same prompt in 1,499 of 1,500 lines
            pairs.append(PreferencePair(prompt, chosen, rejected))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", "-s", action="append", default=[], help="RewardTrainConfig override key=value")
    ap.add_argument("--train", type=int, default=1200)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pairs = load_hh(DATA)
    train, test = pairs[: args.train], pairs[1200:]
    cfg = load_config(RewardTrainConfig, None, [f"{k}={json.dumps(v)}" for k, v in DEFAULTS.items()] + args.set)
    t0 = time.perf_counter()
    res = train_reward_model(cfg, train, on_step=lambda s: s.eval and print(
        f"step {s.step}/{s.total_steps}: val acc {s.eval.accuracy:.3f} loss {s.eval.loss:.4f}", flush=True))
    rm = RewardModel.from_pretrained(res.out_dir)
    m = evaluate(rm, encode(rm, test, 0.0), cfg.eval_batch_size)
    wall = time.perf_counter() - t0
    print(f"\nmachine: {machine(f'torch {torch.__version__}', f'{torch.get_num_threads()} threads')}")
    print(f"command: .venv/bin/python bench/reward_hh.py {' '.join(shlex.quote('--set=' + s) for s in args.set)}")
    keys = ("max_length", "batch_size", "epochs", "lr", "head_lr", "pooling")
    print(f"config: {json.dumps({k: getattr(cfg, k) for k in keys})}")
    print(f"train {res.train_pairs} pairs (+{res.eval_pairs} validation), {res.steps} steps, "
          f"best step {res.best_step}, "
          f"{res.pairs_per_s:.1f} pairs/s, wall {wall / 60:.1f} min")
    print(f"validation accuracy {res.eval_accuracy:.3f}" if res.eval else "no validation split")
    print(m.table())
    print(f"\nHH-RLHF harmless eval (300 held-out pairs): pairwise accuracy {m.accuracy:.1%}, mean margin "
          f"{m.mean_margin:.3f}, loss {m.loss:.4f}")
    print("(published on HH-RLHF: DeBERTa-v3-base 54.5%, -large 55.6%, -large-v2 69.3%; target >= 62%)")


if __name__ == "__main__":
    sys.exit(main())
