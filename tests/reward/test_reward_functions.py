
import pytest
import torch
from reward_helpers import save_tiny_bert

from rlhf.reward.functions import (
    ClassifierReward,
    FunctionReward,
    RewardFunction,
    RewardModelReward,
    ScorerReward,
    load_reward_function,
)
from rlhf.reward.model import RewardModel

PROMPTS = ["hello there", "my house is too hot"]
COMPS = ["the quick brown fox", "you can cool your house with air conditioning"]


def lengths(prompts, completions):
    return [float(len(c)) for c in completions]


def test_python_and_scorer_specs():
    fn = load_reward_function("python:test_reward_functions:lengths")
    assert isinstance(fn, FunctionReward) and isinstance(fn, RewardFunction) and fn.normalization is None
    assert fn(PROMPTS, COMPS).tolist() == [19.0, 45.0]
    sent = load_reward_function("scorer:sentiment")
    assert isinstance(sent, ScorerReward)
    r = sent(["", ""], ["I love this, it is wonderful", "I hate this, it is awful"])
    assert r.dtype == torch.float32 and r[0] > 0.5 and r[1] < -0.5


def test_reward_model_spec_and_bare_path(tiny_rm_dir, tiny_lm_dir):
    by_path = load_reward_function(str(tiny_rm_dir))
    by_spec = load_reward_function(f"rm:{tiny_rm_dir}")
    assert isinstance(by_path, RewardModelReward) and isinstance(by_path, RewardFunction)
    assert by_path.normalization == (0.25, 2.0)
    r = by_path(PROMPTS, COMPS)
    assert r.shape == (2,) and r.dtype == torch.float32
    torch.testing.assert_close(r, by_spec(PROMPTS, COMPS))
    torch.testing.assert_close(r, RewardModel.from_pretrained(tiny_rm_dir).score(PROMPTS, COMPS))
    with pytest.raises(ValueError, match="unknown reward spec"):
        load_reward_function(str(tiny_lm_dir))  # a plain LM folder is not a reward model
    with pytest.raises(FileNotFoundError):
        load_reward_function(f"rm:{tiny_rm_dir}/nope")


def test_classifier_reward_is_the_named_class_logit(tmp_path):
    path = save_tiny_bert(tmp_path / "hate", num_labels=2, id2label={0: "hate", 1: "not hate"})
    rf = load_reward_function(f"classifier:{path}:not hate")
    assert isinstance(rf, ClassifierReward) and rf.index == 1 and rf.name.endswith(":not hate")
    got = rf(PROMPTS, COMPS)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        expected = torch.cat([model(**tok([c], return_tensors="pt")).logits[:, 1] for c in COMPS])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert load_reward_function(f"classifier:{path}:0").index == 0
    with pytest.raises(ValueError, match=r"labels are \['hate', 'not hate'\]"):
        load_reward_function(f"classifier:{path}:toxic")
    with pytest.raises(ValueError, match="name one"):
        load_reward_function(f"classifier:{path}")
