import json
import math
import time

import pytest
import torch
from helpers import PROMPTS, count_e, tiny_cfg, tiny_policy
from tiny import tiny_llama

import rlhf.models.policy
from rlhf.config import ConfigError, load_config
from rlhf.models.lora import load_adapter
from rlhf.policy import PPOConfig, load_policy, train_ppo
from rlhf.policy.metrics import is_timing
from rlhf.policy.online import OnlineTrainer
from rlhf.policy.ppo import PPO
from rlhf.policy.train import build_policy
from rlhf.reward.functions import FunctionReward


@pytest.mark.parametrize("lora", [True, False])
def test_first_step_kl_is_zero_and_ratio_exactly_one_with_padding(tmp_path, tiny_tok, lora):
    # old log-probs from a forward: exactly the function the update differentiates (old_logprobs=sampler: below)
    cfg = tiny_cfg(tmp_path, f"lora.enabled={lora}", "forward_batch_size=3", "old_logprobs=forward")
    policy, tok = build_policy(cfg, tiny_policy(tiny_tok), tiny_tok)
    trainer = OnlineTrainer(cfg, PPO(cfg), policy, tok, PROMPTS, FunctionReward(count_e))
    seen = []
    forward = trainer.minibatch_forward

    def spy(mb):
        out = forward(mb)
        seen.append((out[0].detach(), mb))
        return out

    trainer.minibatch_forward = spy
    m = trainer.step()
    new_lp, mb = seen[0]  # first minibatch of the first epoch: shuffled rows, no update yet
    mask = mb.response_mask.bool()
    assert (mb.attention_mask[:, 0] == 0).any(), "no left padding in the minibatch"
    assert (~mask[:, -1]).any() and mask[:, -1].any(), "no right padding in the minibatch"
    assert torch.equal(mb.old_logprobs, mb.ref_logprobs)
    ratio = torch.exp(new_lp - mb.old_logprobs)[mask]
    assert torch.equal(ratio, torch.ones_like(ratio))
    assert m["kl/mean"] == 0.0 and m["kl/k1_mean"] == 0.0
    assert m["nonfinite/skipped_updates"] == 0 and m["optimizer_steps"] == 4  # 2 epochs x 8/4 minibatches


def test_sampler_old_logprobs_skip_the_lm_head_and_match_a_forward(tmp_path, tiny_tok, monkeypatch):
    cfg = tiny_cfg(tmp_path, "forward_batch_size=3")
    assert cfg.old_logprobs == "sampler"
    policy, tok = build_policy(cfg, tiny_policy(tiny_tok), tiny_tok)
    with torch.no_grad():
        policy.value_head.weight.normal_()  # non-zero values, so the values-only path is checked
    trainer = OnlineTrainer(cfg, PPO(cfg), policy, tok, PROMPTS, FunctionReward(count_e))
    head, calls, seen, trunk_rows = policy.lm.get_output_embeddings(), [], [], []
    hook = head.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))  # the sampler's calls
    trunk = rlhf.models.policy.unwrap(policy.lm).get_decoder()
    hook2 = trunk.register_forward_hook(lambda m, i, o: trunk_rows.append(o.last_hidden_state.shape[:2]))
    fused = rlhf.models.policy.head_logprobs  # the frozen head's fused log-prob path (training and reference)
    monkeypatch.setattr(rlhf.models.policy, "head_logprobs", lambda h, *a: calls.append(h.shape) or fused(h, *a))
    forward = trainer.minibatch_forward

    def spy(mb):
        if not seen:  # before the first update: what a no-grad forward of the old policy gives
            with torch.no_grad():
                seen.append((mb, policy(mb.sequences, mb.attention_mask, mb.prompt_len, with_values=True)))
        return forward(mb)

    trainer.minibatch_forward = spy
    trainer.step()
    hook.remove(), hook2.remove()
    # on whole responses the LM head ran for the 3 reference chunks (8 rows, 3 a chunk) and the 4 gradient
    # minibatches, not for the old policy (with old_logprobs=forward: 3 more); the sampler's calls are one row each
    assert sum(len(s) == 3 and s[1] > 1 for s in calls) == 3 + 4 + 1  # + the spy's own forward
    mb, out = seen[0]
    # ... and the trunk ran on whole sequences for those alone: the old values are the sampler's trunk states
    # through the value head, not a trunk forward of their own (3 more chunks)
    assert sum(n == mb.sequences.size(1) for _, n in trunk_rows) == 3 + 4 + 1
    mask = mb.response_mask
    torch.testing.assert_close(mb.old_logprobs, out.logprobs * mask, atol=1e-5, rtol=0)
    torch.testing.assert_close(mb.old_values, out.values * mask, atol=1e-6, rtol=0)
    assert float(mb.old_values.abs().sum()) > 0


def test_adaptive_beta_follows_the_controller(tmp_path, tiny_tok):
    cfg = tiny_cfg(tmp_path, "lora.enabled=false", "kl_coef=0.1", "target_kl=0.5", "kl_horizon=40")
    res = train_ppo(cfg, FunctionReward(count_e), model=tiny_policy(tiny_tok), tokenizer=tiny_tok, prompts=PROMPTS)
    h = res.history
    for prev, cur in zip(h, h[1:]):
        err = min(max(prev["kl/mean"] / 0.5 - 1, -0.2), 0.2)
        assert cur["kl/beta"] == pytest.approx(prev["kl/beta"] * math.exp(err * 8 / 40))
    assert h[-1]["kl/mean"] > 0  # the policy moved away from the reference


def test_synthetic_reward_rises_within_a_minute(tmp_path, tiny_tok):
    cfg = tiny_cfg(tmp_path, "lora.enabled=false", "max_steps=30", "batch_size=16", "mini_batch_size=8",
                   "update_epochs=4", "sampling.max_new_tokens=16", "kl_coef=0.01")
    t0 = time.perf_counter()
    res = train_ppo(cfg, FunctionReward(count_e), model=tiny_llama(len(tiny_tok)), tokenizer=tiny_tok, prompts=PROMPTS)
    took = time.perf_counter() - t0
    rewards = [r["reward/raw_mean"] for r in res.history]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert took < 60
    assert last > first + 0.3, rewards
    assert res.history[-1]["kl/mean"] > 0


def test_kill_and_resume_gives_the_same_metrics(tmp_path, tiny_tok):
    common = ("max_steps=4", "checkpoint_every=2")
    full = train_ppo(tiny_cfg(tmp_path / "a", *common), FunctionReward(count_e),
                     model=tiny_policy(tiny_tok), tokenizer=tiny_tok, prompts=PROMPTS)

    class Killed(Exception):
        pass

    def kill_after_3(m):
        if m["step"] == 3:
            raise Killed

    cfg_b = tiny_cfg(tmp_path / "b", *common)
    with pytest.raises(Killed):
        train_ppo(cfg_b, FunctionReward(count_e), model=tiny_policy(tiny_tok), tokenizer=tiny_tok, prompts=PROMPTS,
                  on_step=kill_after_3)
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 3  # step 3 logged, then killed
    resumed = train_ppo(cfg_b, FunctionReward(count_e), model=tiny_policy(tiny_tok), tokenizer=tiny_tok, prompts=PROMPTS)

    def strip(history):
        return [{k: v for k, v in r.items() if not is_timing(k)} for r in history]

    on_disk = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in on_disk] == [1, 2, 3, 4]
    assert strip(on_disk) == strip(full.history)
    assert strip(resumed.history) == strip(full.history)
    a = dict(full.model.named_parameters())
    for name, p in resumed.model.named_parameters():
        assert torch.equal(p, a[name]), name


def test_resume_with_changed_settings_is_refused(tmp_path, tiny_tok):
    from rlhf.config import ConfigError

    out = tmp_path / "run"
    train_ppo(tiny_cfg(out, "max_steps=1"), FunctionReward(count_e), model=tiny_policy(tiny_tok), tokenizer=tiny_tok,
              prompts=PROMPTS)
    with pytest.raises(ConfigError, match=r"lr: 0.01 -> 0.02"):
        train_ppo(tiny_cfg(out, "max_steps=2", "lr=2e-2"), FunctionReward(count_e), model=tiny_policy(tiny_tok),
                  tokenizer=tiny_tok, prompts=PROMPTS)
    # More steps (and other resume-safe keys) continue the same run.
    res = train_ppo(tiny_cfg(out, "max_steps=2", "threads=1"), FunctionReward(count_e), model=tiny_policy(tiny_tok),
                    tokenizer=tiny_tok, prompts=PROMPTS)
    assert res.steps == 2 and [r["step"] for r in res.history] == [1, 2]


def test_time_limit_stops_as_incomplete(tmp_path, tiny_tok):
    res = train_ppo(tiny_cfg(tmp_path / "t", "max_steps=3", "time_limit_min=0"), FunctionReward(count_e),
                    model=tiny_policy(tiny_tok), tokenizer=tiny_tok, prompts=PROMPTS)
    assert (res.steps, res.stop_reason, res.complete) == (1, "time_limit", False)
    assert json.loads((tmp_path / "t" / "result.json").read_text())["complete"] is False


@pytest.mark.parametrize("override", ["sampling.top_p=0.9", "sampling.top_k=50", "sampling.temperature=0"])
def test_truncated_or_greedy_rollout_sampling_is_refused(tmp_path, override):
    with pytest.raises(ConfigError, match="off-policy"):
        tiny_cfg(tmp_path, override)


def test_non_finite_loss_is_skipped_and_never_reaches_the_weights(tmp_path, tiny_tok):
    calls = {"n": 0}

    def nan_on_second_step(prompts, completions):
        calls["n"] += 1
        return [math.nan if calls["n"] == 2 else c.count("e") / 4 for c in completions]

    cfg = tiny_cfg(tmp_path, "max_steps=1", "lora.enabled=false")
    res = train_ppo(cfg, FunctionReward(nan_on_second_step), model=tiny_policy(tiny_tok), tokenizer=tiny_tok, prompts=PROMPTS)
    before = {n: p.detach().clone() for n, p in res.model.named_parameters()}
    trainer = OnlineTrainer(cfg, PPO(cfg), res.model, tiny_tok, PROMPTS, FunctionReward(nan_on_second_step))
    m = trainer.step()
    assert m["nonfinite/skipped_updates"] == 4 and m["optimizer_steps"] == 0
    for n, p in res.model.named_parameters():
        assert torch.equal(p, before[n]), n
    assert all(torch.isfinite(p).all() for p in res.model.parameters())
    assert math.isnan(m["reward/raw_mean"])


def test_outputs_peft_adapter_value_head_metrics_and_config(tmp_path, tiny_tok, tiny_lm_dir):
    cfg = tiny_cfg(tmp_path, "max_steps=2", "tensorboard=true", f"model={tiny_lm_dir}")
    res = train_ppo(cfg, FunctionReward(count_e), prompts=PROMPTS)
    assert (res.policy_dir / "adapter_config.json").exists() and (res.policy_dir / "adapter_model.safetensors").exists()
    assert res.policy_dir.name == "adapter" and res.value_head_path.exists()
    assert load_config(PPOConfig, res.config_path) == cfg
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    records = [json.loads(line) for line in res.metrics_path.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for key in ("reward/raw_mean", "reward/normalized_mean", "kl/mean", "entropy", "policy/clipfrac", "policy/approx_kl",
                "loss/value", "value/explained_variance", "response/length_mean", "tokens_per_s", "time/generate",
                "time/score", "time/train"):
        assert key in records[-1], key

    # base + adapter from disk reproduces the in-memory policy
    merged, tok = load_policy(tmp_path)
    ids = tok(["hot house"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want = res.model.lm(input_ids=ids).logits
        torch.testing.assert_close(merged(input_ids=ids).logits, want, rtol=1e-5, atol=1e-5)
        unmerged = load_adapter(tiny_llama(len(tiny_tok)), res.policy_dir)
        assert not torch.equal(unmerged(input_ids=ids).logits, tiny_llama(len(tiny_tok))(input_ids=ids).logits)


def test_full_weights_and_separate_critic(tmp_path, tiny_tok):
    cfg = tiny_cfg(tmp_path, "max_steps=1", "lora.enabled=false", "separate_critic=true")
    res = train_ppo(cfg, FunctionReward(count_e), model=tiny_policy(tiny_tok), tokenizer=tiny_tok, prompts=PROMPTS)
    assert (tmp_path / "policy" / "config.json").exists()
    assert res.model.critic is not None
    from safetensors.torch import load_file

    saved = load_file(str(res.value_head_path))
    assert any(k.startswith("critic.") for k in saved) and "value_head.weight" in saved
    assert saved["value_head.weight"].abs().sum() > 0  # trained from its zero init
    model, _ = load_policy(tmp_path)
    torch.testing.assert_close(model.lm_head.weight, res.model.lm.lm_head.weight)


def test_evaluate_policy_scores_held_out_prompts_and_kl(tiny_tok):
    from rlhf.config import load_config as load
    from rlhf.generation import SamplingConfig
    from rlhf.models.reference import ReferencePolicy
    from rlhf.policy.core import evaluate_policy

    cfg = load(PPOConfig, None, ["lora.r=4"])
    policy, tok = build_policy(cfg, tiny_policy(tiny_tok), tiny_tok)
    texts = [p.prompt for p in PROMPTS]
    res = evaluate_policy(policy, tok, texts, FunctionReward(count_e), SamplingConfig(10, 1.0), batch_size=3,
                          max_prompt_tokens=64, reference=ReferencePolicy(policy.policy))
    assert len(res.completions) == len(texts) == len(res.rewards)
    assert res.rewards == [c.count("e") / 4 for c in res.completions]
    assert res.mean_reward == pytest.approx(sum(res.rewards) / len(texts))
    # adapter still zero: the policy is the reference (its log-probs are the sampler's: float rounding apart)
    assert res.kl == pytest.approx(0.0, abs=1e-5)
    again = evaluate_policy(policy, tok, texts, FunctionReward(count_e), SamplingConfig(10, 1.0), batch_size=3, max_prompt_tokens=64)
    assert again.completions == res.completions and again.kl != again.kl  # seeded; nan without a reference


def test_init_adapter_starts_from_a_saved_adapter_and_must_match_lora(tmp_path, tiny_tok):
    from rlhf.models.lora import apply_lora, save_adapter

    start = apply_lora(tiny_policy(tiny_tok), load_config(PPOConfig, None, ["lora.r=4"]).lora)
    with torch.no_grad():
        for n, p in start.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)  # a trained adapter: non-zero update
    save_adapter(start, tmp_path / "sft")
    strip = lambda n: n[n.index("layers."):]  # noqa: E731  (peft's wrapper prefixes differ)
    saved = {strip(n): p.clone() for n, p in start.named_parameters() if "lora_" in n}

    cfg = tiny_cfg(tmp_path / "ppo", f"init_adapter={tmp_path / 'sft'}")
    policy, _ = build_policy(cfg, tiny_policy(tiny_tok), tiny_tok)
    got = {strip(n): p for n, p in policy.lm.named_parameters() if "lora_" in n}
    assert got.keys() == saved.keys() and all(torch.equal(got[n], saved[n]) for n in saved)
    assert all(p.requires_grad for p in got.values())
    with pytest.raises(ValueError, match=r"adapter_config\.json: the adapter does not match the `lora` settings: r 4 \(lora: 8\)"):
        build_policy(tiny_cfg(tmp_path / "ppo2", f"init_adapter={tmp_path / 'sft'}", "lora.r=8"), tiny_policy(tiny_tok), tiny_tok)
    with pytest.raises(ValueError, match="init_adapter: the model passed in already has an adapter"):
        build_policy(cfg, start, tiny_tok)  # it would be silently ignored
    with pytest.raises(ValueError, match="init_adapter needs lora.enabled=true"):
        tiny_cfg(tmp_path / "ppo3", f"init_adapter={tmp_path / 'sft'}", "lora.enabled=false")
