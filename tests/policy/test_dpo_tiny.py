"""DPO on the tiny model: step 0 is the reference, it learns a synthetic preference, weights count, exact resume,
peft outputs that `rlhf evaluate` takes, and the CLI."""

import json
import math
import random

import pytest
import torch
from helpers import tiny_policy
from typer.testing import CliRunner

from rlhf.config import ConfigError, load_config
from rlhf.policy import DPOConfig, load_policy, train_policy
from rlhf.policy.dpo import DPOTrainer, encode_pairs
from rlhf.policy.metrics import is_timing
from rlhf.policy.train import build_policy
from rlhf.types import PreferencePair

E_RICH = ["the tree", "see here", "please", "there", "the house"]  # chosen: many 'e'
E_FREE = ["a dog", "quick brown fox jumps", "shut up", "thank you", "good"]  # rejected: few or none


def synthetic_pairs(n_prompts: int = 24, seed: int = 0) -> list[PreferencePair]:
    rng = random.Random(seed)
    topics = ["hot house", "the quick fox", "thank you", "love", "bad"]
    prompts = [f"prompt {i} {rng.choice(topics)}" for i in range(n_prompts)]
    return [PreferencePair(p, rng.choice(E_RICH), rng.choice(E_FREE)) for p in prompts for _ in range(2)]


def dpo_cfg(out, *overrides: str) -> DPOConfig:
    base = [f"out_dir={out}", "batch_size=8", "max_prompt_tokens=64", "tensorboard=false", "checkpoint_every=0",
            "lora.r=4", "sampling.max_new_tokens=8", "lr=3e-3", "eval_fraction=0.2"]
    return load_config(DPOConfig, None, [*base, *overrides])


def test_step_zero_policy_is_the_reference_and_the_margin_is_zero(tmp_path, tiny_tok):
    cfg = dpo_cfg(tmp_path)
    policy, tok = build_policy(cfg, tiny_policy(tiny_tok), tiny_tok)
    trainer = DPOTrainer(cfg, policy, tok, synthetic_pairs())
    batch = encode_pairs(tok, trainer.train[:8], 64, 64)
    assert (batch.attention_mask[:, 0] == 0).any() and (batch.response_mask[:, -1] == 0).any()  # padded both sides
    with torch.no_grad():
        pol, ref = trainer.logps(batch)
    assert torch.equal(pol, ref)
    assert trainer.evaluate()["eval/margin"] == 0.0 and trainer.evaluate()["eval/accuracy"] == 0.5
    m = trainer.step()  # metrics come from the forward before the update
    assert m["rewards/margin"] == 0.0 and m["rewards/chosen"] == 0.0 and m["rewards/accuracy"] == 0.5
    assert m["loss"] == pytest.approx(math.log(2))
    assert m["nonfinite/skipped_updates"] == 0


@pytest.mark.parametrize("variant,loss_at_reference", [
    ((), math.log(2)), (("loss_type=ipo", "beta=0.5"), 1.0), (("label_smoothing=0.1",), math.log(2)),
])
def test_a_tiny_model_learns_a_synthetic_preference(tmp_path, tiny_tok, variant, loss_at_reference):
    res = train_policy(dpo_cfg(tmp_path, "epochs=4", "eval_every=5", *variant), model=tiny_policy(tiny_tok),
                       tokenizer=tiny_tok, pairs=synthetic_pairs())
    c = res.closing
    assert c["eval/pairs"] == 10  # held out by prompt: 5 of 24 prompts, 2 pairs each
    assert c["eval/accuracy"] >= 0.9 and c["eval/margin"] > 0  # on prompts it never trained on
    assert c["eval/loss"] < 0.6 * loss_at_reference  # IPO at the reference: (0 - 1 / (2 x 0.5))^2 = 1
    assert c["kl/mean"] > 0 and c["kl/prompts"] == 5 and c["kl/prompts_from"] == "eval"
    assert [h["step"] for h in res.history if "eval/accuracy" in h] == [5, 10, 15]  # the last eval is the closing one


def test_pair_weights_scale_each_pairs_pull(tmp_path, tiny_tok):
    p1, p2 = PreferencePair("hot house", "the tree", "a dog"), PreferencePair("love", "see here", "shut up")

    def one_step(pairs, name):
        cfg = dpo_cfg(tmp_path / name, "batch_size=2", "eval_fraction=0", "max_steps=1", "kl_prompts=1")
        res = train_policy(cfg, model=tiny_policy(tiny_tok), tokenizer=tiny_tok, pairs=pairs)
        return {n: p.detach().clone() for n, p in res.model.named_parameters() if p.requires_grad}, res.history[0]

    model = tiny_policy(tiny_tok)
    torch.manual_seed(0)  # as train_policy seeds before LoRA initialises its A matrices
    start = {n: p for n, p in build_policy(dpo_cfg(tmp_path), model, tiny_tok)[0].named_parameters() if p.requires_grad}
    zero, m = one_step([PreferencePair(p1.prompt, p1.chosen, p1.rejected, 0.0)] * 2, "zero")
    assert m["loss"] == 0.0 and all(torch.equal(zero[n], start[n]) for n in start)  # weight 0: no pull at all
    only_p1, _ = one_step([p1, PreferencePair(p2.prompt, p2.chosen, p2.rejected, 0.0)], "p1_only")
    p1_twice, _ = one_step([p1, p1], "p1_twice")
    both, _ = one_step([p1, p2], "both")
    for n in start:
        torch.testing.assert_close(only_p1[n], p1_twice[n], rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(only_p1[n], both[n], rtol=1e-4, atol=1e-6) for n in start)


def test_kill_and_resume_gives_the_same_metrics(tmp_path, tiny_tok):
    common = ("max_steps=5", "checkpoint_every=2", "eval_every=2")
    full = train_policy(dpo_cfg(tmp_path / "a", *common), model=tiny_policy(tiny_tok), tokenizer=tiny_tok,
                        pairs=synthetic_pairs())

    class Killed(Exception):
        pass

    def kill_after_3(m):
        if m["step"] == 3:
            raise Killed

    cfg_b = dpo_cfg(tmp_path / "b", *common)
    with pytest.raises(Killed):
        train_policy(cfg_b, model=tiny_policy(tiny_tok), tokenizer=tiny_tok, pairs=synthetic_pairs(), on_step=kill_after_3)
    resumed = train_policy(cfg_b, model=tiny_policy(tiny_tok), tokenizer=tiny_tok, pairs=synthetic_pairs())

    def strip(history):
        return [{k: v for k, v in r.items() if not is_timing(k) and k != "pairs_per_s"} for r in history]

    on_disk = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in on_disk] == [1, 2, 3, 4, 5]
    assert strip(on_disk) == strip(full.history) == strip(resumed.history)
    assert full.history[-1]["rewards/margin"] != 0.0
    assert resumed.closing == full.closing
    a = dict(full.model.named_parameters())
    for name, p in resumed.model.named_parameters():
        assert torch.equal(p, a[name]), name


def test_outputs_a_peft_adapter_that_evaluate_takes_like_a_ppo_run(tmp_path, tiny_tok, tiny_lm_dir):
    from rlhf.evaluate.run import EvaluateConfig, load_policies

    cfg = dpo_cfg(tmp_path / "run", "max_steps=3", "tensorboard=true", f"model={tiny_lm_dir}")
    res = train_policy(cfg, pairs=synthetic_pairs())
    assert res.policy_dir == tmp_path / "run" / "adapter" and (res.policy_dir / "adapter_model.safetensors").exists()
    assert load_config(DPOConfig, tmp_path / "run" / "dpo.yaml") == cfg and list((tmp_path / "run" / "tb").glob("events.*"))
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["algorithm"] == "dpo" and result["closing"]["eval/pairs"] == res.closing["eval/pairs"]
    ids = tiny_tok(["hot house"], return_tensors="pt")["input_ids"]
    merged, _ = load_policy(tmp_path / "run")
    aligned, base, _ = load_policies(EvaluateConfig(aligned=str(tmp_path / "run"), base=str(tiny_lm_dir)))
    assert base is None  # an adapter: evaluate uses the same base with the adapter off
    with torch.no_grad():
        want = res.model.lm(input_ids=ids).logits
        torch.testing.assert_close(merged(input_ids=ids).logits, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(aligned(input_ids=ids).logits, want, rtol=1e-5, atol=1e-5)


def test_rlhf_dpo_cli(tmp_path, tiny_lm_dir):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in synthetic_pairs(12)))
    out = tmp_path / "run"
    runner = CliRunner()
    ok = runner.invoke(__import__("rlhf.cli", fromlist=["app"]).app, [
        "dpo", "--pairs", str(pairs), "--model", str(tiny_lm_dir), "--out", str(out), "--steps", "2", "--beta", "0.2",
        "-s", "batch_size=4", "-s", "sampling.max_new_tokens=4", "-s", "tensorboard=false", "-s", "lora.r=4",
    ])
    assert ok.exit_code == 0, ok.output
    assert "DPO stopped after 2 steps (max_steps): held-out implicit-reward accuracy" in ok.output
    assert (out / "adapter" / "adapter_config.json").exists() and "beta: 0.2" in (out / "dpo.yaml").read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "chosen": "a"}\n')
    res = runner.invoke(__import__("rlhf.cli", fromlist=["app"]).app, ["dpo", "--pairs", str(bad), "--model", str(tiny_lm_dir),
                                                                       "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "bad.jsonl:1" in res.output and "rejected" in res.output


@pytest.mark.parametrize("override,match", [
    ("label_smoothing=0.1 loss_type=ipo", "sigmoid loss only"), ("beta=0", "beta must be > 0"),
    ("eval_fraction=1.0", "eval_fraction"), ("batch_size=6 grad_accum_steps=4", "multiple of grad_accum_steps"),
])
def test_bad_dpo_settings_are_refused(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        dpo_cfg(tmp_path, *override.split())


def test_init_adapter_is_refused_since_the_reference_would_be_the_base(tmp_path):
    with pytest.raises(ValueError, match="init_adapter: DPO's reference must be the policy it starts from"):
        dpo_cfg(tmp_path, f"init_adapter={tmp_path}")
