import json

import pytest
import torch

from rlhf.config import ConfigError, load_config
from rlhf.evaluate.run import EvaluateConfig, run_evaluate, run_settings


@pytest.fixture()
def adapter_dir(tiny_lm_dir, tmp_path):
    from rlhf.models.lora import LoraSettings, apply_lora, save_adapter
    from rlhf.models.registry import load_causal_lm

    model, tok = load_causal_lm(tiny_lm_dir)
    peft_model = apply_lora(model, LoraSettings(r=4, alpha=8))
    torch.manual_seed(0)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:  # non-zero B so the adapter really changes the policy
            p.data.normal_(0, 0.5)
    run = tmp_path / "run"
    save_adapter(peft_model, run / "adapter", tok)
    (run / "ppo.yaml").write_text(
        f"model: {tiny_lm_dir}\nsampling:\n  max_new_tokens: 8\n  temperature: 0.7\n  top_p: 1.0\n  top_k: 0\n"
        "system_prompt: Answer briefly.\nadaptive_kl: true\ntarget_kl: 0.001\nmax_prompt_tokens: 64\n")
    return run


def _prompts(tmp_path, name, n):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"id": f"{name}-{i}", "prompt": f"tell me about hot house number {i}",
                                        "split": "eval"}) + "\n" for i in range(n)))
    return str(path)


def test_evaluate_per_split_with_run_settings(tiny_lm_dir, adapter_dir, tmp_path):
    cfg = load_config(
        EvaluateConfig, None, ["rewards=[python:tests_rewards:length_reward]"],
        aligned=str(adapter_dir), prompts=(_prompts(tmp_path, "redteam", 6), _prompts(tmp_path, "helpful", 4)),
        out_dir=str(tmp_path / "eval"), batch_size=4, relevance_model=str(tiny_lm_dir), num_examples=3,
    )
    res = run_evaluate(cfg)
    s = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert s == json.loads(json.dumps(res.summary))
    # the run folder's config decides base, sampling, system prompt and KL target
    st = s["settings"]
    assert st["base"] == str(tiny_lm_dir) and st["sampling"]["temperature"] == 0.7 and st["sampling"]["max_new_tokens"] == 8
    assert st["system_prompt"] == "Answer briefly." and s["kl"]["target"] == 0.001
    assert st["kl_samples"] == "the evaluation samples"
    assert list(s["splits"]) == ["redteam", "helpful"] and s["num_prompts"] == 10
    red = s["splits"]["redteam"]["metrics"]
    assert set(red) >= {"toxicity", "sentiment", "relevance", "fluency", "python:tests_rewards:length_reward",
                        "response_length", "eos_rate", "distinct_1", "distinct_2"}
    assert red["python:tests_rewards:length_reward"]["kind"] == "learned" and red["fluency"]["kind"] == "judge"
    # the learned reward is the completion length in characters: check it against the written completions
    rows = [json.loads(line) for line in (tmp_path / "eval" / "completions_aligned.jsonl").read_text().splitlines()]
    red_rows = [r for r in rows if r["split"] == "redteam"]
    assert len(rows) == 10 and len(red_rows) == 6
    lens = [len(r["completion"]) for r in red_rows]
    assert red["python:tests_rewards:length_reward"]["aligned"] == pytest.approx(sum(lens) / len(lens))
    d = red["toxicity"]["diff"]
    assert d["low"] <= d["value"] <= d["high"]
    assert red["toxicity"]["diff"]["value"] == pytest.approx(red["toxicity"]["aligned"] - red["toxicity"]["base"])
    # KL: on the aligned samples, adapter on vs off, compared with the run's target
    kls = [r["kl"] for r in rows]
    assert s["kl"]["value"] == pytest.approx(sum(kls) / len(kls)) and s["kl"]["value"] != 0
    checks = {c["name"]: c["status"] for c in s["reward_hacking"]["checks"]}
    assert checks["KL budget"] == ("flagged" if s["kl"]["value"] > 1.5 * 0.001 else "passed")
    assert s["verdict"]["status"] in ("aligned", "inconclusive", "regressed") and s["verdict"]["reasons"]
    assert len(s["splits"]["helpful"]["examples"]) == 3
    html = res.report_path.read_text()
    assert "Verdict:" in html and "Reward-hacking check" in html and html.count("data:image/png;base64,") >= 2


def test_evaluate_samples_per_prompt(tiny_lm_dir, adapter_dir, tmp_path):
    cfg = load_config(
        EvaluateConfig, None, ["rewards=[python:tests_rewards:length_reward]"],
        aligned=str(adapter_dir), prompts=(_prompts(tmp_path, "redteam", 3),), out_dir=str(tmp_path / "eval"),
        batch_size=4, relevance_model=str(tiny_lm_dir), num_examples=2, samples_per_prompt=3, judges=False,
    )
    s = run_evaluate(cfg).summary
    rows = [json.loads(line) for line in (tmp_path / "eval" / "completions_aligned.jsonl").read_text().splitlines()]
    assert [(r["id"], r["sample"]) for r in rows] == [(f"redteam-{i}", j) for i in range(3) for j in range(3)]
    red = s["splits"]["redteam"]
    assert s["num_prompts"] == 3 and red["samples_per_prompt"] == 3 and s["settings"]["samples_per_prompt"] == 3
    lens = [len(r["completion"]) for r in rows]
    assert red["metrics"]["python:tests_rewards:length_reward"]["aligned"] == pytest.approx(sum(lens) / 9)
    assert s["kl"]["value"] == pytest.approx(sum(r["kl"] for r in rows) / 9)
    # the three samples of one prompt differ (they are not one sample copied), and examples show each prompt's first
    assert len({r["completion"] for r in rows if r["id"] == "redteam-0"}) > 1
    firsts = {r["id"]: r["completion"] for r in rows if r["sample"] == 0}
    assert all(ex["aligned"] == firsts[ex["id"]] for ex in red["examples"])
    with pytest.raises(ValueError, match="samples_per_prompt"):
        EvaluateConfig(samples_per_prompt=0)


def test_evaluate_refuses_another_base(adapter_dir, tmp_path):
    cfg = EvaluateConfig(aligned=str(adapter_dir), base="smollm2-135m-instruct")
    with pytest.raises(ConfigError, match="trained from"):
        run_settings(cfg)


def test_truncated_eval_sampling_measures_kl_on_separate_untruncated_samples(tiny_lm_dir, adapter_dir, tmp_path):
    cfg = load_config(
        EvaluateConfig, None, ["sampling.temperature=0", "sampling.max_new_tokens=6", "judges=false", "scorers=[toxicity]"],
        aligned=str(adapter_dir), prompts=_prompts(tmp_path, "redteam", 4), out_dir=str(tmp_path / "eval"), batch_size=4,
    )
    s = run_evaluate(cfg).summary
    assert s["settings"]["kl_samples"] == "separate untruncated samples" and s["settings"]["rollout_temperature"] == 0.7
    checks = {c["name"]: c["status"] for c in s["verdict"]["checks"]}
    assert checks["non-inferiority: redteam relevance"] == "not run"  # judges were off: never "passed"


def test_kl_log_probs_match_the_full_logits(adapter_dir):
    """sequence_kl's per-token log-probs (trunk + fused frozen head) equal log_softmax of the model's own logits."""
    from rlhf.evaluate.run import _adapter_disabled, _logprobs, kl_and_base_logprobs, load_policies, sequence_kl
    from rlhf.generation import SamplingConfig, encode_prompts, position_ids_from_mask, sample

    aligned, base, tok = load_policies(EvaluateConfig(aligned=str(adapter_dir)))
    assert base is None  # LoRA: the base is the aligned model with its adapter off
    ids, mask = encode_prompts(tok, ["hello there", "the quick brown fox jumps"], 64)
    out = sample(aligned, ids, mask, SamplingConfig(max_new_tokens=6, temperature=0.7), [tok.eos_token_id],
                 tok.pad_token_id, torch.Generator().manual_seed(0))

    def expected(model, temperature=0.7):
        logits = model(input_ids=out.sequences, attention_mask=out.attention_mask,
                       position_ids=position_ids_from_mask(out.attention_mask)).logits[:, out.prompt_len - 1 : -1]
        logp = torch.log_softmax(logits.float() / temperature, -1)
        return logp.gather(-1, out.responses[..., None])[..., 0] * out.response_mask

    with torch.no_grad():
        [lp], want = _logprobs(aligned, out, 0.7), expected(aligned)
        with _adapter_disabled(aligned):
            [ref], want_ref = _logprobs(aligned, out, 0.7), expected(aligned)
            want_ref1 = expected(aligned, 1.0)
    torch.testing.assert_close(lp, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(ref, want_ref, rtol=0, atol=1e-5)
    assert (lp - ref).abs().sum() > 1e-3  # the adapter changes the policy, so the KL is not trivially 0
    kl = sequence_kl(aligned, None, [out], 0.7)
    assert kl == pytest.approx((want - want_ref).sum(-1).tolist(), abs=1e-4)
    # the sampler's own log-probs stand in for the aligned forward: same draws, same KL
    kept = sample(aligned, ids, mask, SamplingConfig(max_new_tokens=6, temperature=0.7), [tok.eos_token_id],
                  tok.pad_token_id, torch.Generator().manual_seed(0), with_logprobs=True)
    assert torch.equal(kept.sequences, out.sequences)
    torch.testing.assert_close(kept.logprobs, want, rtol=0, atol=1e-5)
    assert sequence_kl(aligned, None, [kept], 0.7) == pytest.approx(kl, abs=1e-4)
    # the same base forward gives the base's temperature-1 log-probs (the aligned samples' fluency)
    _, [base_lp1] = kl_and_base_logprobs(aligned, None, [kept], 0.7)
    torch.testing.assert_close(base_lp1, want_ref1, rtol=0, atol=1e-5)
    # and the sampler's temperature-1 log-probs are the sampling model's own (the base samples' fluency)
    with torch.no_grad():
        torch.testing.assert_close(kept.raw_logprobs, expected(aligned, 1.0), rtol=0, atol=1e-5)
