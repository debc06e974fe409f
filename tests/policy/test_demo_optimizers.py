"""`rlhf demo --optimizer dpo|rloo|grpo` on the tiny model: the policy stage runs the chosen optimiser and says so."""

import json

import pytest
from typer.testing import CliRunner

from rlhf.cli import app
from rlhf.config import load_config
from rlhf.demo import DemoConfig, stage_configs

TINY = [
    "train_prompts=12", "eval_prompts=6", "generate.sampling.max_new_tokens=8", "reward.epochs=1",
    "labeler_noise=0", "labeler_tie_margin=0",
    "dpo.max_steps=2", "dpo.batch_size=4", "dpo.sampling.max_new_tokens=8", "dpo.kl_prompts=4",
    "rloo.max_steps=2", "rloo.batch_size=4", "rloo.k=2", "rloo.mini_batch_size=2", "rloo.sampling.max_new_tokens=8",
]


def test_demo_with_dpo_then_rloo_in_the_same_run_folder(tiny_lm_dir, tmp_path):
    out = tmp_path / "run"
    args = ["demo", "--out", str(out), "--policy", str(tiny_lm_dir), "--reward-trunk", str(tiny_lm_dir)]
    for s in TINY:
        args += ["--set", s]
    res = CliRunner().invoke(app, args + ["--optimizer", "dpo"])
    assert res.exit_code == 0, res.output
    stages = json.loads((out / "stages.json").read_text())
    assert stages["ppo"]["optimizer"] == "dpo" and stages["ppo"]["steps"] == 2
    assert stages["ppo"]["closing"]["eval/pairs"] > 0 and "kl/mean" in stages["ppo"]["closing"]
    assert (out / "dpo" / "adapter" / "adapter_config.json").exists() and not (out / "ppo").exists()
    summary = json.loads((out / "evaluate" / "summary.json").read_text())
    assert summary["num_prompts"] == 12  # 6 held-out prompts of each split (red-team, helpful)
    assert summary["settings"]["run_config"].endswith("dpo.yaml")  # sampling and base read from the DPO run
    assert summary["settings"]["sampling"]["max_new_tokens"] == 8 and summary["kl"]["target"] is None
    assert "policy optimiser dpo: 2 steps" in res.output
    assert '"optimizer": "dpo"' in (out / "evaluate" / "report.html").read_text()  # stages.json, shown in the report

    # Another optimiser on the same folder is refused unless its stage is re-run explicitly.
    refused = CliRunner().invoke(app, args + ["--optimizer", "rloo"])
    assert refused.exit_code != 0 and "already ran with optimizer=dpo" in str(refused.exception or refused.output)
    for stage in ("ppo", "evaluate"):
        res = CliRunner().invoke(app, args + ["--optimizer", "rloo", "--stage", stage])
        assert res.exit_code == 0, res.output
    stages = json.loads((out / "stages.json").read_text())
    assert stages["ppo"]["optimizer"] == "rloo" and (out / "rloo" / "adapter" / "adapter_config.json").exists()
    assert len((out / "rloo" / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("optimizer", ["ppo", "dpo", "rloo", "grpo"])
def test_stage_configs_fill_the_chosen_optimiser(optimizer):
    cfg = load_config(DemoConfig, None, ["out_dir=runs/x", f"optimizer={optimizer}",
                                         f"{optimizer}.sampling.max_new_tokens=24"])
    sc = stage_configs(cfg)
    policy = sc["ppo"]
    assert type(policy) is type(getattr(cfg, optimizer)) and policy.out_dir == f"runs/x/{optimizer}"
    assert policy.sampling.max_new_tokens == 24 and policy.system_prompt == cfg.system_prompt
    # evaluation reads sampling, system prompt and KL target from the policy run's saved config
    assert sc["evaluate"].aligned == f"runs/x/{optimizer}" and sc["evaluate"].sampling is None
    assert sc["evaluate"].kl_target is None and sc["evaluate"].base is None
    if optimizer == "dpo":
        assert policy.pairs == "runs/x/feedback/pairs.jsonl"
    else:
        assert policy.reward == "rm:runs/x/reward" and policy.split == "train"
        assert policy.prompts == "runs/x/prompts_train.jsonl"


def test_unknown_optimizer_is_refused():
    from rlhf.config import ConfigError

    with pytest.raises(ConfigError, match="optimizer"):
        load_config(DemoConfig, None, ["optimizer=sft"])
