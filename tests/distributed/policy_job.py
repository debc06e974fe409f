"""Tiny PPO and GRPO runs; under `accelerate launch` every process saves the weights it ends with (weights_rank{R}.pt)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from policy.helpers import PROMPTS, count_e, tiny_cfg, tiny_policy  # noqa: E402
from tiny import tiny_tokenizer  # noqa: E402

from rlhf.distributed import make_runtime  # noqa: E402
from rlhf.policy.grpo import GRPOConfig  # noqa: E402
from rlhf.policy.state import trainable_state  # noqa: E402
from rlhf.policy.train import train_policy  # noqa: E402

# Global batch 8, minibatch 4 in micro-batches of 2: a process's share of a minibatch is exactly one
# micro-batch of the one-process run. Reward whitening makes the scores depend on the whole batch; GRPO's
# groups of k=2 make the advantages depend on both samples of a prompt.
OVERRIDES = ("episode_seeds=true", "grad_accum_steps=2", "max_steps=2", "whiten_rewards=true", "lora.r=2")


def config(algo: str, out: Path, *extra: str):
    cfg = tiny_cfg(out, *OVERRIDES, *extra)
    if algo == "grpo":
        shared = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name in GRPOConfig.__dataclass_fields__}
        cfg = GRPOConfig(**(shared | {"k": 2, "loss_aggregation": "token"}))
    return cfg


def run(algo: str, out: Path, *extra: str):
    torch.set_num_threads(1)
    tok = tiny_tokenizer()
    rt = make_runtime()
    res = train_policy(config(algo, out, *extra), count_e, model=tiny_policy(tok), tokenizer=tok, prompts=PROMPTS,
                       runtime=rt)
    torch.save(trainable_state(res.model), out / f"weights_rank{rt.rank}.pt")
    return res


if __name__ == "__main__":
    for algo in ("ppo", "grpo"):
        run(algo, Path(sys.argv[1]) / algo)
