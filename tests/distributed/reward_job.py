"""A tiny reward-model run; under `accelerate launch` every process saves the weights it ends with and its result."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reward"))
from reward_helpers import synthetic_pairs  # noqa: E402

from rlhf.distributed import make_runtime  # noqa: E402
from rlhf.reward.config import RewardTrainConfig  # noqa: E402
from rlhf.reward.train import train_reward_model  # noqa: E402


def pairs():
    """70 pairs with unequal weights: 7 test, 6 eval, 57 train -> batches of 6 and a last one of 3 (uneven shares)."""
    return [dataclasses.replace(p, weight=0.5 + (i % 3)) for i, p in enumerate(synthetic_pairs(70))]


def run(model_dir: Path, out: Path):
    torch.set_num_threads(1)
    rt = make_runtime()
    cfg = RewardTrainConfig(model=str(model_dir), out_dir=str(out), max_length=48, batch_size=6, lr=2e-3, head_lr=2e-3,
                            epochs=1, tensorboard=False, center_coef=0.01, eval_every=4, eval_batch_size=4)
    res = train_reward_model(cfg, pairs(), runtime=rt)
    trained = {n: p.detach().clone() for n, p in res.model.named_parameters()}
    torch.save(trained, out / f"weights_rank{rt.rank}.pt")
    (out / f"result_rank{rt.rank}.json").write_text(json.dumps(
        {"eval": res.eval.to_dict(), "test": res.test.to_dict(), "normalization": res.normalization, "steps": res.steps}))
    return res


if __name__ == "__main__":
    run(Path(sys.argv[1]), Path(sys.argv[2]))
