"""PPO, GRPO and DPO on 2 CPU processes (accelerate launch, gloo) equal the one-process runs with the same global batch and seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlhf.config import ConfigError

from dist_launch import accelerate_launch
from policy_job import run

HERE = Path(__file__).parent
GLOBAL = ("reward/raw_mean", "reward/normalized_mean", "kl/mean", "kl/beta", "response/length_mean", "loss/policy",
          "grad_norm")
ALGO = {"ppo": GLOBAL + ("loss/value", "value/explained_variance"),
        "grpo": GLOBAL + ("reward/group_std_mean", "advantage/abs_mean"),
        "dpo": ("loss", "rewards/accuracy", "rewards/margin", "logps/chosen", "grad_norm")}


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """One `accelerate launch` runs both algorithms (the launcher's start-up is most of the cost)."""
    out = tmp_path_factory.mktemp("two-processes")
    accelerate_launch(HERE / "policy_job.py", str(out))
    return out


@pytest.mark.parametrize("algo", ["ppo", "grpo", "dpo"])
def test_two_processes_match_one_process(tmp_path, launched, algo):
    two_dir = launched / algo
    one = run(algo, tmp_path / "one")

    two = [json.loads(line) for line in (two_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(two) == len(one.history) == 2
    for a, b in zip(one.history, two):
        for key in ALGO[algo]:  # statistics of the whole batch, not of rank 0's share
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    if algo == "dpo":  # held-out metrics and the closing KL: the same in both runs
        closing = json.loads((two_dir / "result.json").read_text())["closing"]
        for key in ("eval/loss", "eval/accuracy", "kl/mean"):
            assert closing[key] == pytest.approx(one.closing[key], rel=1e-4, abs=1e-5), key
    else:
        assert two[0]["reward/raw_mean"] != 0  # the reward saw completions with an 'e': the check is not vacuous

    w0, w1 = (torch.load(two_dir / f"weights_rank{r}.pt") for r in (0, 1))
    w = torch.load(tmp_path / "one" / "weights_rank0.pt")
    assert w0.keys() == w1.keys() == w.keys()
    for name in w:
        assert torch.equal(w0[name], w1[name]), name  # both ranks hold the same weights
        torch.testing.assert_close(w0[name], w[name], rtol=1e-4, atol=1e-5)  # and those of one process
    assert any("lora_B" in n and w[n].abs().max() > 0 for n in w)  # LoRA B starts at 0: the runs did train
    # Only rank 0 wrote files: one adapter, one metrics log, no second set.
    assert (two_dir / "adapter" / "adapter_config.json").exists() and (two_dir / "result.json").exists()
    assert len(two) == 2  # one metrics log, written once per step (not once per process)

    # Resuming the 2-process checkpoint in one process is refused, naming both counts.
    with pytest.raises(ConfigError, match="2 process"):
        run(algo, two_dir, "max_steps=3")
