"""Training pairs/s: `train_reward_model` vs TRL's `RewardTrainer`, same model, data, batch size and max length.

    flock /tmp/rlhf-bench.lock .venv/bin/python bench/reward_train.py [--pairs 320] [--batch-size 16] \
        [--max-length 256] [--threads 1]

Both train MiniLM (AutoModelForSequenceClassification, num_labels=1, its native CLS-pooler head,
fp32, dropout off) on the same HH-RLHF harmless pairs, tokenised once by our encoder (so TRL sees
exactly the same token ids and nothing is filtered by its max_length), one epoch, AdamW lr 5e-5.
TRL runs with bf16=False and gradient_checkpointing=False (its defaults target GPUs; both would
only slow it down on this CPU). Throughput is steady-state: pairs of steps 2..N-1 over the time
between the end of step 1 and the end of step N-1, taken from each trainer's per-step callback.
One torch thread by default: the two cores here are shared, and with two threads a busy neighbour
makes both trainers stall on thread synchronisation, which swamps the difference being measured.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
from _machine import machine

sys.path.insert(0, str(Path(__file__).parent))
from reward_hh import DATA, load_hh  # noqa: E402

from rlhf.models.registry import resolve  # noqa: E402
from rlhf.reward.config import RewardTrainConfig  # noqa: E402
from rlhf.reward.model import RewardModel  # noqa: E402
from rlhf.reward.train import encode, train_reward_model  # noqa: E402

MODEL = "all-minilm-l6-v2"


def steady_rate(stamps: list[float], batch: int) -> float:
    """Pairs/s between the end of step 1 and the end of step N-1."""
    return (len(stamps) - 2) * batch / (stamps[-2] - stamps[0])


def run_ours(pairs, args, out: Path) -> float:
    cfg = RewardTrainConfig(
        model=MODEL, out_dir=str(out), pooling="native", max_length=args.max_length, batch_size=args.batch_size,
        epochs=1, lr=5e-5, head_lr=None, eval_fraction=0.0, resume=False, tensorboard=False, threads=args.threads,
        stats_pairs=16,
    )
    stamps: list[float] = []
    train_reward_model(cfg, pairs, on_step=lambda s: stamps.append(time.perf_counter()))
    return steady_rate(stamps, args.batch_size)


def run_trl(pairs, args, out: Path) -> float:
    import datasets
    import trl
    from transformers import AutoModelForSequenceClassification, TrainerCallback

    rm = RewardModel.from_pretrained(MODEL, max_length=args.max_length)
    enc = encode(rm, pairs, 0.0)
    ds = datasets.Dataset.from_dict({"chosen_ids": [list(p.chosen.ids) for p in enc],
                                     "rejected_ids": [list(p.rejected.ids) for p in enc]})
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(resolve(MODEL), num_labels=1, dtype=torch.float32)
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, *a, **k):
            stamps.append(time.perf_counter())

    targs = trl.RewardConfig(
        output_dir=str(out), per_device_train_batch_size=args.batch_size, num_train_epochs=1, learning_rate=5e-5,
        max_length=args.max_length, bf16=False, gradient_checkpointing=False, use_cpu=True, report_to="none",
        save_strategy="no", logging_steps=10, dataloader_num_workers=0, seed=0,
    )
    trainer = trl.RewardTrainer(model=model, args=targs, train_dataset=ds, processing_class=rm.tokenizer,
                                callbacks=[Stamp()])
    trainer.train()
    return steady_rate(stamps, args.batch_size)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=320)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    import trl

    pairs = load_hh(DATA)[: args.pairs]
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):  # alternate, so background load hits both alike
            ours.append(run_ours(pairs, args, Path(tmp) / f"ours{i}"))
            theirs.append(run_trl(pairs, args, Path(tmp) / f"trl{i}"))
            print(f"round {i + 1}: ours {ours[-1]:.2f} pairs/s, TRL {theirs[-1]:.2f} pairs/s", flush=True)
    o, t = max(ours), max(theirs)
    print(f"\nmachine: {machine(f'torch {torch.__version__} ({args.threads} threads)', f'trl {trl.__version__}')}")
    print(f"MiniLM reward model, {args.pairs} HH-RLHF pairs, batch {args.batch_size} pairs, "
          f"max_length {args.max_length}, "
          f"best of {args.repeats}")
    print(f"{'trainer':<28}{'pairs/s':>10}")
    print(f"{'rlhf train_reward_model':<28}{o:>10.2f}")
    print(f"{'trl RewardTrainer':<28}{t:>10.2f}")
    print(f"speed-up: {o / t:.2f}x")


if __name__ == "__main__":
    main()
