import math

import pytest
from reward_helpers import synthetic_pairs

from rlhf.reward.config import RewardTrainConfig
from rlhf.reward.functions import load_reward_function
from rlhf.reward.train import train_reward_model


@pytest.mark.slow
def test_minilm_trunk_trains_a_few_steps_and_scores(tmp_path):
    cfg = RewardTrainConfig(model="all-minilm-l6-v2", out_dir=str(tmp_path / "rm"), batch_size=8, epochs=1,
                            max_length=64, eval_fraction=0.2, tensorboard=False)
    res = train_reward_model(cfg, synthetic_pairs(20))
    assert res.steps == 2 and res.eval_pairs == 4 and math.isfinite(res.eval.loss)
    rf = load_reward_function(str(res.out_dir))
    assert rf.model.spec.pooling == "mean" and rf.model.spec.max_length == 64
    assert rf(["hello"], ["the quick brown fox"]).shape == (1,)
    assert rf.normalization is not None and rf.normalization[1] > 0
