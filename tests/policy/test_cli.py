import json
import sys

from typer.testing import CliRunner

from rlhf.cli import app


def test_rlhf_ppo_cli_trains_and_writes_outputs(tmp_path, tiny_lm_dir, monkeypatch):
    (tmp_path / "my_reward.py").write_text("def count_e(prompts, completions):\n    return [c.count('e') for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in ["hot house", "thank you", "good", "love"]))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "ppo", "--model", str(tiny_lm_dir), "--prompts", str(prompts), "--reward", "python:my_reward:count_e",
        "--out", str(out), "--steps", "2", "--full",
        "-s", "batch_size=4", "-s", "mini_batch_size=2", "-s", "sampling.max_new_tokens=6", "-s", "tensorboard=false",
    ])
    assert result.exit_code == 0, result.output
    assert "PPO stopped after 2 steps (max_steps)" in result.output
    assert (out / "policy" / "config.json").exists() and (out / "value_head.safetensors").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert "enabled: false" in (out / "ppo.yaml").read_text()


def test_rlhf_ppo_cli_rejects_bad_reward_and_config(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["ppo", "--reward", "nonsense", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown reward spec" in bad.output
    bad_cfg = runner.invoke(app, ["ppo", "-s", "batch_size=10", "-s", "mini_batch_size=4", "--out", str(tmp_path)])
    assert bad_cfg.exit_code == 2 and "multiple of mini_batch_size" in bad_cfg.output


def test_rlhf_rloo_and_grpo_cli_train_without_a_value_head(tmp_path, tiny_lm_dir, monkeypatch):
    (tmp_path / "my_reward.py").write_text("def count_e(prompts, completions):\n    return [c.count('e') for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in ["hot house", "thank you", "good", "love"]))
    for algo in ("rloo", "grpo"):
        out = tmp_path / algo
        result = CliRunner().invoke(app, [
            algo, "--model", str(tiny_lm_dir), "--prompts", str(prompts), "--reward", "python:my_reward:count_e",
            "--out", str(out), "--steps", "2", "--k", "2", "-s", "batch_size=4", "-s", "mini_batch_size=2",
            "-s", "sampling.max_new_tokens=6", "-s", "tensorboard=false", "-s", "lora.r=4",
        ])
        assert result.exit_code == 0, result.output
        assert f"{algo.upper()} stopped after 2 steps (max_steps)" in result.output
        assert (out / "adapter" / "adapter_config.json").exists() and not (out / "value_head.safetensors").exists()
        assert "k: 2" in (out / f"{algo}.yaml").read_text()
    bad = CliRunner().invoke(app, ["grpo", "--k", "3", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "divide batch_size" in bad.output
