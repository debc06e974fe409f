"""PPO on 2 CPU processes (accelerate launch, gloo) equals the one-process run with the same global batch and seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlhf.config import ConfigError

from dist_launch import accelerate_launch
from ppo_job import run

HERE = Path(__file__).parent
GLOBAL = ("reward/raw_mean", "reward/normalized_mean", "kl/mean", "kl/beta", "response/length_mean", "loss/policy",
          "loss/value", "grad_norm", "value/explained_variance")


def test_two_processes_match_one_process(tmp_path):
    accelerate_launch(HERE / "ppo_job.py", str(tmp_path / "two"))
    one = run(tmp_path / "one")

    two = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(two) == len(one.history) == 2
    for a, b in zip(one.history, two):
        for key in GLOBAL:  # statistics of the whole batch, not of rank 0's share
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    assert two[0]["reward/raw_mean"] != 0  # the reward saw completions with an 'e': the check is not vacuous

    w0, w1 = (torch.load(tmp_path / "two" / f"weights_rank{r}.pt") for r in (0, 1))
    w = torch.load(tmp_path / "one" / "weights_rank0.pt")
    assert w0.keys() == w1.keys() == w.keys()
    for name in w:
        assert torch.equal(w0[name], w1[name]), name  # both ranks hold the same weights
        torch.testing.assert_close(w0[name], w[name], rtol=1e-4, atol=1e-5)  # and those of one process
    assert any("lora_B" in n and w[n].abs().max() > 0 for n in w)  # LoRA B starts at 0: the runs did train
    # Only rank 0 wrote files: one adapter, one metrics log, no second set.
    assert (tmp_path / "two" / "adapter" / "adapter_config.json").exists()
    assert not (tmp_path / "two" / "weights_rank2.pt").exists()

    # Resuming the 2-process checkpoint in one process is refused, naming both counts.
    with pytest.raises(ConfigError, match="2 process"):
        run(tmp_path / "two", "max_steps=3")
