import json

import pytest
import torch

from rlhf.config import load_config
from rlhf.evaluate.run import EvaluateConfig, run_evaluate


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
    return save_adapter(peft_model, tmp_path / "adapter", tok)


def test_evaluate_writes_summary_and_report(tiny_lm_dir, adapter_dir, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"tell me about hot house number {i}"}) + "\n" for i in range(6)))
    cfg = load_config(
        EvaluateConfig, None, ["sampling.max_new_tokens=8", "rewards=[python:tests_rewards:length_reward]", "split=null"],
        aligned=str(adapter_dir), base=str(tiny_lm_dir), prompts=str(prompts),
        out_dir=str(tmp_path / "eval"), batch_size=4, kl_target=0.001,
    )
    res = run_evaluate(cfg)
    s = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert s == json.loads(json.dumps(res.summary))
    assert s["num_prompts"] == 6
    base, aligned = s["policies"]["base"], s["policies"]["aligned"]
    assert set(base) >= {"toxicity", "sentiment", "python:tests_rewards:length_reward", "kl_to_base", "distinct_2"}
    assert base["kl_to_base"] == 0.0 and aligned["kl_to_base"] != 0.0
    # learned reward here is the completion length in characters: check it against the written completions
    rows = [json.loads(line) for line in (tmp_path / "eval" / "completions_aligned.jsonl").read_text().splitlines()]
    lens = [len(r["completion"]) for r in rows]
    assert aligned["python:tests_rewards:length_reward"]["mean"] == pytest.approx(sum(lens) / len(lens))
    assert 0.0 <= s["win_rate"]["low"] <= s["win_rate"]["value"] <= s["win_rate"]["high"] <= 1.0
    assert s["reward_hacking"]["flagged"] is (s["learned_reward_delta"] > 0 and s["gold_deltas"]["toxicity"] < 0 or aligned["kl_to_base"] > 0.003)
    html = res.report_path.read_text()
    assert html.count("data:image/png;base64,") >= 3 and "Reward-hacking check" in html
    assert len(s["examples"]) == 6 and s["examples"][0]["delta"] >= s["examples"][-1]["delta"]
