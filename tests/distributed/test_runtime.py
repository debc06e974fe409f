"""The single-process Runtime is the identity; shards are contiguous and even; old checkpoints still resume."""

from __future__ import annotations

import pytest
import torch

from rlhf.config import ConfigError
from rlhf.distributed import Runtime, make_runtime
from rlhf.policy.ppo import PPOConfig
from rlhf.policy.state import check_resumable, resume_key


class Rank1Of2(Runtime):
    world_size, rank, is_main = 2, 1, False


def test_one_process_is_the_identity(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    rt = make_runtime()
    assert type(rt) is Runtime and rt.is_main and rt.shard(7) == slice(0, 7)
    t = torch.arange(3.0)
    assert rt.gather(t) is t and rt.gather_ragged(t) is t and rt.mean(2.5) == rt.sum(2.5) == 2.5 and rt.all(False) is False


def test_shards_are_contiguous_and_even():
    rt = Rank1Of2()
    assert rt.shard(8) == slice(4, 8)
    with pytest.raises(ValueError, match="7 items do not split evenly over 2 processes"):
        rt.shard(7)


def test_checkpoints_from_before_new_fields_still_resume(tmp_path):
    cfg = PPOConfig(out_dir=str(tmp_path))
    old = resume_key(cfg)
    del old["episode_seeds"], old["sampling"]["backend"]  # written before these fields existed
    check_resumable(old, cfg, tmp_path / "checkpoint.pt")  # their defaults are what the old run did
    with pytest.raises(ConfigError, match="episode_seeds"):  # a real change is still refused
        check_resumable(old, PPOConfig(out_dir=str(tmp_path), episode_seeds=True), tmp_path / "checkpoint.pt")
