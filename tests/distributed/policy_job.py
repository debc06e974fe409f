"""Tiny PPO, GRPO and DPO runs; under `accelerate launch` every process saves the weights it ends with (weights_rank{R}.pt)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from policy.helpers import PROMPTS, count_e, tiny_cfg, tiny_policy  # noqa: E402
from tiny import tiny_tokenizer  # noqa: E402

from rlhf.config import load_config  # noqa: E402
from rlhf.distributed import make_runtime  # noqa: E402
from rlhf.policy.dpo import DPOConfig  # noqa: E402
from rlhf.policy.grpo import GRPOConfig  # noqa: E402
from rlhf.policy.state import trainable_state  # noqa: E402
from rlhf.policy.train import train_policy  # noqa: E402
from rlhf.types import PreferencePair  # noqa: E402

# Global batch 8, minibatch 4 in micro-batches of 2: a process's share of a minibatch is exactly one
# micro-batch of the one-process run. Reward whitening makes the scores depend on the whole batch; GRPO's
# groups of k=2 make the advantages depend on both samples of a prompt.
# old_logprobs=forward: the same function gives old and reference log-probs, so step 1's KL is exactly 0 in both
# runs. The sampler's own log-probs differ from it by float rounding that depends on each process's batch shape,
# and GRPO's group-std scaling turns that rounding in a flat group into visible advantages.
OVERRIDES = ("episode_seeds=true", "grad_accum_steps=2", "max_steps=2", "whiten_rewards=true", "lora.r=2",
             "old_logprobs=forward")


# DPO: 'e'-rich chosen vs 'e'-free rejected, unequal weights (the batch's weighted mean spans both processes).
PAIRS = [PreferencePair(f"prompt {i} {t}", c, r, weight=0.5 + i % 3) for i, (t, c, r) in enumerate(
    [("hot house", "the tree", "a dog"), ("thank you", "see here please", "shut up"), ("love", "there", "good")] * 8)]


def config(algo: str, out: Path, *extra: str):
    if algo == "dpo":
        return load_config(DPOConfig, None, [
            f"out_dir={out}", "batch_size=8", "grad_accum_steps=2", "max_steps=2", "max_prompt_tokens=64",
            "tensorboard=false", "checkpoint_every=0", "lora.r=2", "sampling.max_new_tokens=6", "lr=3e-3",
            "eval_fraction=0.2", "kl_prompts=4", *extra])
    cfg = tiny_cfg(out, *OVERRIDES, *extra)
    if algo == "grpo":
        shared = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name in GRPOConfig.__dataclass_fields__}
        cfg = GRPOConfig(**(shared | {"k": 2, "loss_aggregation": "token"}))
    return cfg


def run(algo: str, out: Path, *extra: str):
    torch.set_num_threads(1)
    tok = tiny_tokenizer()
    rt = make_runtime()
    res = train_policy(config(algo, out, *extra), None if algo == "dpo" else count_e, model=tiny_policy(tok),
                       tokenizer=tok, prompts=PROMPTS, pairs=PAIRS, runtime=rt)
    torch.save(trainable_state(res.model), out / f"weights_rank{rt.rank}.pt")
    return res


if __name__ == "__main__":
    for algo in ("ppo", "grpo", "dpo"):
        run(algo, Path(sys.argv[1]) / algo)
