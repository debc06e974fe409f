"""Reward model on the demo's own pairs: steps of shuffled pairs vs steps of whole rankings (`prompts_per_step`).

    flock /tmp/rlhf-heavy.lock .venv/bin/python bench/reward_grouping.py runs/demo/feedback/pairs.jsonl \
        [--variants pairs,prompts1x1,prompts1x2,prompts2x2]

Each variant trains the demo's reward model (MiniLM, the demo's `reward` settings, its seed) on the same pairs and
is scored on the same held-out test prompts, which no variant trains on or picks its checkpoint with. Printed per
variant: test accuracy with a CI that resamples prompts, the paired difference to the first variant (same pairs,
same resamples), wall time of the whole run (training, validation, test), and the rows the trunk ran forward in
training (a measure of compute that does not depend on the machine). InstructGPT (Ouyang et al. 2022, sec. 3.5)
reports that whole rankings as one batch element overfit less than shuffled pairs and cost K forward rows per
prompt instead of K(K-1).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
import time
from pathlib import Path

import torch
from _machine import machine

from rlhf.data import read_pairs
from rlhf.demo import DemoConfig
from rlhf.evaluate.metrics import bootstrap_mean
from rlhf.reward.train import encode, hold_out_prompts, train_reward_model

VARIANTS = {  # name: (prompts_per_step, epochs); 0 = the demo's steps of batch_size shuffled pairs
    "pairs": (0, None), "prompts1x1": (1, 1.0), "prompts1x2": (1, 2.0), "prompts2x2": (2, 2.0), "prompts4x3": (4, 3.0),
}


def correct(rm, pairs, margin: float) -> list[float]:
    rc, rr = rm.score_pairs(encode(rm, pairs, margin))
    d = (rc - rr).double()
    return ((d > 0).double() + 0.5 * (d == 0).double()).tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs", help="the demo's feedback/pairs.jsonl")
    ap.add_argument("--variants", default="pairs,prompts1x1,prompts1x2,prompts2x2")
    ap.add_argument("--seed", type=int, default=None, help="reward seed (default: the demo's)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(a.threads)
    demo = DemoConfig()
    base = dataclasses.replace(demo.reward, pairs=a.pairs, tensorboard=False, resume=False, threads=a.threads,
                               seed=demo.seed if a.seed is None else a.seed)
    pairs = read_pairs(a.pairs)
    _, test = hold_out_prompts(pairs, base.test_fraction, base.seed + 1)  # as train_reward_model holds them out
    print(machine(f"torch {torch.__version__}", f"{a.threads} threads"))
    print(f"pairs {a.pairs}: {len(pairs)} pairs over {len({p.prompt for p in pairs})} prompts; test: {len(test)} pairs "
          f"over {len({p.prompt for p in test})} prompts; reward settings as the demo's (epochs {base.epochs}, "
          f"batch {base.batch_size}, lr {base.lr}, max_length {base.max_length})")
    groups = [p.prompt for p in test]
    first = None
    for name in a.variants.split(","):
        pps, epochs = VARIANTS[name]
        cfg = dataclasses.replace(base, prompts_per_step=pps, epochs=epochs or base.epochs)
        rows = [0]
        with tempfile.TemporaryDirectory() as tmp:
            cfg = dataclasses.replace(cfg, out_dir=tmp)
            t0 = time.perf_counter()
            res = _counting_rows(rows, lambda: train_reward_model(cfg))
            wall = time.perf_counter() - t0
            ok = correct(res.model, test, cfg.margin)
        acc = bootstrap_mean(ok, seed=0, groups=groups)
        line = (f"{name:>11}: prompts/step {pps or '-'}, epochs {cfg.epochs:g}, {res.total_steps} steps, "
                f"{rows[0]} training rows forward, {wall / 60:.1f} min; test accuracy {acc.value:.1%} "
                f"[{acc.low:.1%}, {acc.high:.1%}]")
        if first is None:
            first = (name, ok)
        else:
            d = bootstrap_mean([x - y for x, y in zip(ok, first[1])], seed=0, groups=groups)
            line += f"; minus {first[0]}: {d.value:+.1%} [{d.low:+.1%}, {d.high:+.1%}]"
        print(line, flush=True)


def _counting_rows(rows: list[int], run):
    """Run `run()` counting the rows of every training forward (reward.data.collate_pairs)."""
    import rlhf.reward.train as train_mod

    real = train_mod.collate_pairs

    def counted(items, pad_id, side="right"):
        batch = real(items, pad_id, side)
        rows[0] += int(batch.tokens.input_ids.shape[0])
        return batch

    train_mod.collate_pairs = counted
    try:
        return run()
    finally:
        train_mod.collate_pairs = real


if __name__ == "__main__":
    main()
