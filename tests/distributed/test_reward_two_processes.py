"""Reward-model training on 2 CPU processes (accelerate launch, gloo) equals the one-process run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dist_launch import accelerate_launch
from reward_job import run

HERE = Path(__file__).parent


def test_two_processes_match_one_process(tmp_path, tiny_lm_dir):
    accelerate_launch(HERE / "reward_job.py", str(tiny_lm_dir), str(tmp_path / "two"))
    one = run(tiny_lm_dir, tmp_path / "one")
    assert (one.train_pairs, one.eval_pairs, one.test_pairs, one.total_steps) == (57, 6, 7, 10)

    def records(d):
        return [json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]

    a, b = records("one"), records("two")
    assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
    assert sum(r["split"] == "eval" for r in b) == 3
    for ra, rb in zip(a, b):  # whole-batch loss and accuracy; eval over all 6 pairs, not one rank's share
        for key in ("loss", "accuracy", "margin"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-5), (ra["step"], ra["split"], key)

    r0, r1 = (json.loads((tmp_path / "two" / f"result_rank{r}.json").read_text()) for r in (0, 1))
    assert r0 == r1  # every process returns the same metrics
    ref = json.loads((tmp_path / "one" / "result_rank0.json").read_text())
    assert r0["eval"]["n"] == ref["eval"]["n"] == 6 and r0["test"]["n"] == 7
    for split in ("eval", "test"):
        assert r0[split]["accuracy"] == ref[split]["accuracy"]
        assert r0[split]["loss"] == pytest.approx(ref[split]["loss"], rel=1e-4)
    assert r0["normalization"] == pytest.approx(ref["normalization"], rel=1e-4, abs=1e-5)

    w0, w1 = (torch.load(tmp_path / "two" / f"weights_rank{r}.pt") for r in (0, 1))
    w = torch.load(tmp_path / "one" / "weights_rank0.pt")
    for name in w:
        assert torch.equal(w0[name], w1[name]), name  # both ranks hold the same weights
        torch.testing.assert_close(w0[name], w[name], rtol=1e-4, atol=1e-5)
    saved = (tmp_path / "two" / "model.safetensors")
    assert saved.exists() and (tmp_path / "two" / "reward_stats.json").exists()
