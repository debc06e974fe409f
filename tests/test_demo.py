"""`rlhf demo` end to end on the tiny model: every stage's output lands in one run folder."""

import json

from typer.testing import CliRunner

from rlhf.cli import app
from rlhf.config import load_config
from rlhf.data import read_pairs
from rlhf.demo import DemoConfig, stage_configs

TINY = [
    "train_prompts=12", "eval_prompts=6", "generate.sampling.max_new_tokens=8", "reward.epochs=1",
    # the tiny model's completions differ little in toxicity: noiseless labelers keep a strict order
    "labeler_noise=0", "labeler_tie_margin=0",
    "ppo.max_steps=2", "ppo.batch_size=4", "ppo.mini_batch_size=2", "ppo.sampling.max_new_tokens=8",
    "ppo.checkpoint_every=1",
]


def test_demo_end_to_end_then_resume(tiny_lm_dir, tmp_path):
    out = tmp_path / "run"
    args = ["demo", "--out", str(out), "--policy", str(tiny_lm_dir), "--reward-trunk", str(tiny_lm_dir)]
    for s in TINY:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    stages = json.loads((out / "stages.json").read_text())
    assert list(stages) == ["generate", "feedback", "reward", "ppo", "evaluate"]
    gens = [json.loads(line) for line in (out / "generate" / "completions.jsonl").read_text().splitlines()]
    assert len(gens) == 12 and all(len(g["completions"]) == 4 for g in gens)
    fb = stages["feedback"]
    assert fb["excluded"] == ["careless"]  # the reversed labeler is flagged and left out
    assert fb["agreement"]["alpha_kept"] > fb["agreement"]["alpha"]  # agreement rises without them
    assert sum(fb["judgements"].values()) == 12 * 3  # k = 3 labelers per item
    pairs = read_pairs(out / "feedback" / "pairs.jsonl")
    assert len(pairs) == fb["pairs"] > 0
    assert 0.0 <= stages["reward"]["accuracy"] <= 1.0
    assert (out / "reward" / "reward_stats.json").exists()
    assert (out / "ppo" / "adapter" / "adapter_config.json").exists()
    assert len((out / "ppo" / "metrics.jsonl").read_text().splitlines()) == 2
    summary = json.loads((out / "evaluate" / "summary.json").read_text())
    assert summary["num_prompts"] == 6 and summary["toxicity_before"] is not None
    html = (out / "evaluate" / "report.html").read_text()
    assert "Reward model accuracy" in html and "PPO KL to reference" in html and "Reward-hacking check" in html
    assert "without the excluded ones" in html
    assert "report:" in res.output and "reward model: held-out pairwise accuracy" in res.output

    # Re-running skips finished stages; --stage re-runs one alone.
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and res.output.count("already done, skipped") == 5, res.output
    before = (out / "evaluate" / "summary.json").stat().st_mtime_ns
    res = CliRunner().invoke(app, args + ["--stage", "evaluate"])
    assert res.exit_code == 0, res.output
    assert (out / "evaluate" / "summary.json").stat().st_mtime_ns > before


def test_stage_configs_evaluate_like_ppo_trains():
    # The hacking check compares the eval KL with PPO's target: both must sample alike.
    cfg = load_config(DemoConfig, None, ["out_dir=runs/x", "ppo.sampling.max_new_tokens=24", "ppo.target_kl=4"])
    sc = stage_configs(cfg)
    assert sc["evaluate"].sampling == sc["ppo"].sampling and sc["evaluate"].sampling.max_new_tokens == 24
    assert sc["evaluate"].kl_target == 4.0 and sc["evaluate"].rewards == ("rm:runs/x/reward",)
    assert sc["ppo"].reward == "rm:runs/x/reward" and sc["ppo"].out_dir == "runs/x/ppo"
