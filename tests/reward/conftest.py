"""Reward fixtures: a tiny BERT, a saved tiny reward model (tiny Llama, pad == EOS), one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from reward_helpers import save_tiny_bert


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_rm_dir(tmp_path_factory, tiny_lm_dir) -> Path:
    """A trained-format reward-model folder (tiny Llama, untrained head) with saved statistics."""
    from rlhf.data import write_json
    from rlhf.reward.model import RewardModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-rm")
    RewardModel.from_pretrained(tiny_lm_dir, max_length=64).save_pretrained(out)
    write_json(out / "reward_stats.json", {"mean": 0.25, "std": 2.0, "n": 10})
    return out


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, especially when other jobs share the two cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
