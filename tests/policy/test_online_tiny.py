"""RLOO and GRPO on the tiny model: the shared core's guarantees, learning, exact resume, and bad settings refused."""

import json
import time

import pytest
import torch
from helpers import PROMPTS, count_e, tiny_policy

from rlhf.config import ConfigError, load_config
from rlhf.policy import GRPOConfig, RLOOConfig, train_policy
from rlhf.policy.grpo import GRPO
from rlhf.policy.metrics import is_timing
from rlhf.policy.online import OnlineTrainer
from rlhf.policy.rloo import RLOO
from rlhf.policy.train import build_policy
from rlhf.reward.functions import FunctionReward
from tiny import tiny_llama

ALGOS = {"rloo": (RLOOConfig, RLOO), "grpo": (GRPOConfig, GRPO)}


def cfg_for(algo: str, out, *overrides: str):
    base = [
        f"out_dir={out}", "batch_size=8", "k=4", "mini_batch_size=4", "sampling.max_new_tokens=12", "max_prompt_tokens=64",
        "update_epochs=2", "max_steps=3", "tensorboard=false", "checkpoint_every=0", "lr=1e-2", "lora.r=4",
    ]
    return load_config(ALGOS[algo][0], None, [*base, *overrides])


@pytest.mark.parametrize("old", ["forward", "sampler"])
@pytest.mark.parametrize("algo", ["rloo", "grpo"])
def test_first_step_kl_is_zero_ratio_one_and_groups_share_a_prompt(tmp_path, tiny_tok, algo, old):
    cfg = cfg_for(algo, tmp_path, "forward_batch_size=3", f"old_logprobs={old}")
    policy, tok = build_policy(cfg, tiny_policy(tiny_tok), tiny_tok)
    assert not hasattr(policy, "value_head")
    trainer = OnlineTrainer(cfg, ALGOS[algo][1](cfg), policy, tok, PROMPTS, FunctionReward(count_e))
    seen, prompts_seen = [], []
    forward, reward = trainer.minibatch_forward, trainer.reward_fn

    def spy(mb):
        out = forward(mb)
        seen.append((out[0].detach(), mb))
        return out

    def spy_reward(prompts, completions):
        prompts_seen.append(list(prompts))
        return reward(prompts, completions)

    trainer.minibatch_forward, trainer.reward_fn = spy, spy_reward
    m = trainer.step()
    assert [len(set(prompts_seen[0][i : i + 4])) for i in (0, 4)] == [1, 1]  # k = 4 samples of one prompt, adjacent
    assert prompts_seen[0][0] != prompts_seen[0][4]
    new_lp, mb = seen[0]
    mask = mb.response_mask.bool()
    assert mb.advantages.shape == (4,)  # one advantage per sequence
    ratio = torch.exp(new_lp - mb.old_logprobs)[mask]
    if old == "forward":  # the same function on the same rows: exact
        assert torch.equal(mb.old_logprobs, mb.ref_logprobs)
        assert torch.equal(ratio, torch.ones_like(ratio))
        assert m["kl/mean"] == 0.0
    else:  # the sampler's incremental (KV-cache, adapter merged) log-probs: equal up to float rounding
        assert mb.old_logprobs[mask].abs().min() > 0  # they are there, not zeros
        torch.testing.assert_close(mb.old_logprobs, mb.ref_logprobs, atol=1e-5, rtol=0)
        torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=1e-5, rtol=0)
        assert abs(m["kl/mean"]) < 1e-4
    assert m["nonfinite/skipped_updates"] == 0 and m["optimizer_steps"] == 4
    # with KL 0 the shaped (sequence-level) return is the mean score
    assert m["reward/shaped_return"] == pytest.approx(m["reward/raw_mean"])


@pytest.mark.parametrize("algo", ["rloo", "grpo"])
def test_synthetic_reward_rises_within_a_minute(tmp_path, tiny_tok, algo):
    cfg = cfg_for(algo, tmp_path, "lora.enabled=false", "max_steps=20", "batch_size=16", "mini_batch_size=8",
                  "update_epochs=4", "sampling.max_new_tokens=16", "kl_coef=0.01")
    t0 = time.perf_counter()
    res = train_policy(cfg, FunctionReward(count_e), model=tiny_llama(len(tiny_tok)), tokenizer=tiny_tok, prompts=PROMPTS)
    took = time.perf_counter() - t0
    rewards = [r["reward/raw_mean"] for r in res.history]
    assert took < 60
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.5, rewards
    assert res.history[-1]["kl/mean"] > 0


def test_rloo_kill_and_resume_gives_the_same_metrics(tmp_path, tiny_tok):
    common = ("max_steps=4", "checkpoint_every=2")
    full = train_policy(cfg_for("rloo", tmp_path / "a", *common), FunctionReward(count_e),
                        model=tiny_policy(tiny_tok), tokenizer=tiny_tok, prompts=PROMPTS)

    class Killed(Exception):
        pass

    def kill_after_3(m):
        if m["step"] == 3:
            raise Killed

    cfg_b = cfg_for("rloo", tmp_path / "b", *common)
    with pytest.raises(Killed):
        train_policy(cfg_b, FunctionReward(count_e), model=tiny_policy(tiny_tok), tokenizer=tiny_tok, prompts=PROMPTS,
                     on_step=kill_after_3)
    resumed = train_policy(cfg_b, FunctionReward(count_e), model=tiny_policy(tiny_tok), tokenizer=tiny_tok, prompts=PROMPTS)

    def strip(history):
        return [{k: v for k, v in r.items() if not is_timing(k)} for r in history]

    on_disk = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in on_disk] == [1, 2, 3, 4]
    assert strip(on_disk) == strip(full.history) == strip(resumed.history)
    assert full.history[-1]["kl/mean"] != 0.0  # the runs moved: the comparison is not between two idle policies
    a = dict(full.model.named_parameters())
    for name, p in resumed.model.named_parameters():
        assert torch.equal(p, a[name]), name
    assert json.loads((tmp_path / "b" / "result.json").read_text())["algorithm"] == "rloo"
    assert (tmp_path / "b" / "rloo.yaml").exists() and not (tmp_path / "b" / "value_head.safetensors").exists()


def test_a_checkpoint_of_one_algorithm_is_not_resumed_by_another(tmp_path, tiny_tok):
    out = tmp_path / "run"
    train_policy(cfg_for("rloo", out, "max_steps=1"), FunctionReward(count_e), model=tiny_policy(tiny_tok),
                 tokenizer=tiny_tok, prompts=PROMPTS)
    with pytest.raises(ConfigError, match="algorithm: 'RLOOConfig' -> 'GRPOConfig'"):
        train_policy(cfg_for("grpo", out, "max_steps=2"), FunctionReward(count_e), model=tiny_policy(tiny_tok),
                     tokenizer=tiny_tok, prompts=PROMPTS)


def test_grpo_kl_in_the_loss_is_k3_weighted_by_beta(tmp_path, tiny_tok):
    import math

    from rlhf.policy.experience import Experience

    cfg = cfg_for("grpo", tmp_path, "kl_in_loss=true", "kl_coef=0.5", "adaptive_kl=false")
    algo = GRPO(cfg)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    ref = torch.log(torch.tensor([[0.5, 0.5], [0.25, 1.0]]))
    lp = torch.log(torch.tensor([[0.25, 0.5], [0.25, 0.3]]))
    mb = Experience(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long), mask, lp, ref,
                    torch.tensor([1.0, -1.0]), prompt_len=1)
    loss, stats = algo.loss(mb, lp, None, None)
    # k3 with log r = ln 2 on token (0, 0): r - 1 - log r = 1 - ln 2; other real tokens 0.
    # sequence aggregation: mean over response 0's 2 tokens, response 1's 1 token, then over responses
    want_kl = ((1 - math.log(2)) / 2 + 0.0) / 2
    assert stats["loss/kl"] == pytest.approx(want_kl)
    assert stats["loss/policy"] == pytest.approx((-1.0 + 1.0) / 2)  # ratio 1: -A per response, averaged
    assert loss.item() == pytest.approx(0.5 * want_kl)

    res = train_policy(cfg_for("grpo", tmp_path / "run", "kl_in_loss=true", "max_steps=2", "lr=1e-3"),
                       FunctionReward(count_e), model=tiny_policy(tiny_tok), tokenizer=tiny_tok, prompts=PROMPTS)
    for m in res.history:  # the reward is not KL-shaped in this mode; the KL sits in the loss
        assert m["reward/shaped_return"] == pytest.approx(m["reward/raw_mean"], rel=1e-6)
        assert m["loss/total"] == pytest.approx(m["loss/policy"] + m["kl/beta"] * m["loss/kl"], rel=1e-4, abs=1e-7)
    assert res.history[1]["loss/kl"] > 0


@pytest.mark.parametrize("algo,override,match", [
    ("rloo", "k=3", "divide batch_size"), ("grpo", "k=1", "k must be >= 2"),
    ("grpo", "loss_aggregation=sum", "loss_aggregation"), ("rloo", "sampling.top_p=0.9", "off-policy"),
])
def test_bad_group_settings_are_refused(tmp_path, algo, override, match):
    with pytest.raises(ConfigError, match=match):
        cfg_for(algo, tmp_path, override)
