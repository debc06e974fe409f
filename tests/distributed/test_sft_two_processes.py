"""SFT on 2 CPU processes (accelerate launch, gloo) equals the one-process run: same losses, same adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dist_launch import accelerate_launch
from safetensors.torch import load_file
from sft_job import run

HERE = Path(__file__).parent


def test_two_processes_match_one_process(tmp_path):
    accelerate_launch(HERE / "sft_job.py", str(tmp_path / "two"))
    one = run(tmp_path / "one")
    l0, l1 = (json.loads((tmp_path / "two" / f"losses_rank{r}.json").read_text()) for r in (0, 1))
    assert l0 == l1 and len(l0) == one.steps == 6  # both processes report the whole batch's loss
    assert l0 == pytest.approx(one.losses, rel=1e-4) and one.losses[-1] < one.losses[0]
    a = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and any("lora_B" in k and a[k].abs().max() > 0 for k in a)
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k
