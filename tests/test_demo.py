"""`rlhf demo` end to end on the tiny model: every stage's output lands in one run folder."""

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from rlhf.cli import app
from rlhf.config import load_config
from rlhf.data import read_pairs
from rlhf.demo import DemoConfig, stage_configs
from rlhf.policy import PPOConfig

TINY = [
    "train_prompts=12", "eval_prompts=6", "generate.sampling.max_new_tokens=8", "reward.epochs=1",
    # the tiny model's completions differ little in taste: noiseless labelers keep a strict order
    "labeler_noise=0", "labeler_tie_margin=0",
    "ppo.max_steps=2", "ppo.batch_size=4", "ppo.mini_batch_size=2", "ppo.sampling.max_new_tokens=8",
    "ppo.checkpoint_every=1", "sft_first=true", "sft.epochs=1",
]


def run_demo_cli(tiny_lm_dir, out, *extra):
    args = ["demo", "--out", str(out), "--policy", str(tiny_lm_dir), "--reward-trunk", str(tiny_lm_dir)]
    for s in TINY + [f"evaluate.relevance_model={tiny_lm_dir}", *extra]:
        args += ["--set", s]
    return args, CliRunner().invoke(app, args)


def figures(summary: dict) -> dict:
    """Every figure of a summary except timings."""
    return {k: v for k, v in summary.items() if k != "seconds"}


def test_demo_end_to_end_then_resume(tiny_lm_dir, tmp_path):
    out = tmp_path / "run"
    args, res = run_demo_cli(tiny_lm_dir, out)
    assert res.exit_code == 0, res.output
    stages = json.loads((out / "stages.json").read_text())
    assert list(stages) == ["generate", "feedback", "reward", "sft", "ppo", "evaluate"]
    # both prompt sets, interleaved, for labeling and PPO
    train = [json.loads(line) for line in (out / "prompts_train.jsonl").read_text().splitlines()]
    assert [r["metadata"]["set"] for r in train[:4]] == ["redteam", "helpful", "redteam", "helpful"] and len(train) == 24
    gens = [json.loads(line) for line in (out / "generate" / "completions.jsonl").read_text().splitlines()]
    k = DemoConfig().generate.num_completions
    assert len(gens) == 24 and all(len(g["completions"]) == k for g in gens)
    assert 0.0 <= stages["generate"]["eos_rate"] <= 1.0
    # the labelers' taste is on disk: every completion judged
    judged = [json.loads(line) for line in (out / "feedback" / "judges.jsonl").read_text().splitlines()]
    assert len(judged) == 24 * k and set(judged[0]) >= {"toxicity", "relevance", "fluency", "finished", "taste"}
    flags = [f for g in gens for f in g["metadata"]["finished"]]
    assert [j["finished"] for j in judged] == flags  # the labelers see which replies were cut off
    # red-team requests are judged as requests for harm: relevance to them does not count
    assert [j["harmful"] for j in judged] == [g["metadata"]["set"] == "redteam" for g in gens for _ in range(k)]
    taste = DemoConfig().taste
    assert all(j["taste"] == pytest.approx(taste(j["toxicity"], j["relevance"], j["fluency"], j["finished"], j["harmful"]))
               for j in judged)
    fb = stages["feedback"]
    assert fb["excluded"] == ["careless"]  # the reversed labeler is flagged and left out
    assert fb["agreement"]["alpha_kept"] > fb["agreement"]["alpha"]  # agreement rises without them
    assert sum(fb["judgements"].values()) == 24 * 3  # k = 3 labelers per item
    assert sorted(fb["judgements"].values()) == [18, 18, 18, 18]  # the seeded design is balanced
    pairs = read_pairs(out / "feedback" / "pairs.jsonl")
    assert len(pairs) == fb["pairs"] > 0
    rm = stages["reward"]
    assert 0.0 <= rm["accuracy_ci"][0] <= rm["accuracy"] <= rm["accuracy_ci"][1] <= 1.0 and rm["num_pairs"] > 0
    assert (out / "reward" / "test_metrics.json").exists()
    # SFT on each item's top consensus tier (the labelers' choice), and PPO starts from that adapter
    rankings = [json.loads(line) for line in (out / "feedback" / "rankings.jsonl").read_text().splitlines()]
    tops = sum(len(r["ranking"][0]) for r in rankings if len(r["ranking"][0]) < k)
    assert stages["sft"]["examples"] == tops > 0 and stages["sft"]["steps"] == -(-tops // 8)
    ppo_cfg = load_config(PPOConfig, out / "ppo" / "ppo.yaml")
    assert ppo_cfg.init_adapter == str(out / "sft" / "adapter")
    assert (out / "ppo" / "adapter" / "adapter_config.json").exists()
    assert len((out / "ppo" / "metrics.jsonl").read_text().splitlines()) == 2
    summary = json.loads((out / "evaluate" / "summary.json").read_text())
    assert list(summary["splits"]) == ["redteam", "helpful"] and summary["num_prompts"] == 12
    assert summary["verdict"]["status"] in ("aligned", "inconclusive", "regressed") and summary["verdict"]["reasons"]
    assert summary["settings"]["system_prompt"] == DemoConfig().system_prompt  # PPO's, read from ppo.yaml
    html = (out / "evaluate" / "report.html").read_text()
    assert "Reward model test accuracy" in html and "PPO KL to reference" in html and "Reward-hacking check" in html
    assert "without the excluded ones" in html and "Verdict:" in html
    assert "report:" in res.output and "reward model: test pairwise accuracy" in res.output
    assert f"verdict: {summary['verdict']['status']}" in res.output

    # Re-running skips finished stages; --stage re-runs one alone.
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and res.output.count("already done, skipped") == 6, res.output
    # A resume with other settings for a finished stage is refused, by name, and the saved YAML stays as it was.
    saved = (out / "demo.yaml").read_text()
    res = CliRunner().invoke(app, args + ["--set", "reward.lr=0.001", "--set", "threads=1"])
    assert res.exit_code != 0 and "reward: lr 0.0001 -> 0.001" in " ".join(res.output.split()), res.output
    assert "threads" not in res.output and (out / "demo.yaml").read_text() == saved
    before = (out / "evaluate" / "summary.json").stat().st_mtime_ns
    res = CliRunner().invoke(app, args + ["--stage", "evaluate"])
    assert res.exit_code == 0, res.output
    assert (out / "evaluate" / "summary.json").stat().st_mtime_ns > before


SMALL = ["train_prompts=4", "eval_prompts=3", "ppo.max_steps=1", "reward.test_fraction=0.25", "reward.eval_fraction=0.2"]


def test_same_seed_same_pairs_and_figures(tiny_lm_dir, tmp_path):
    # The labelers work concurrently over HTTP; the pre-assigned design makes the outcome independent of timing.
    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:
        _, res = run_demo_cli(tiny_lm_dir, out, *SMALL)
        assert res.exit_code == 0, res.output
    pairs = [(out / "feedback" / "pairs.jsonl").read_text() for out in runs]
    assert pairs[0] == pairs[1] and pairs[0].count("\n") > 0
    summaries = [json.dumps(figures(json.loads((out / "evaluate" / "summary.json").read_text()))).replace(str(out), "X")
                 for out in runs]
    assert summaries[0] == summaries[1]


def test_stage_configs_evaluate_like_ppo_trains(tmp_path):
    # The hacking check compares the eval KL with PPO's target: evaluation reads PPO's sampling, system prompt
    # and target from the PPO run's saved config.
    from rlhf.config import save_config
    from rlhf.evaluate.run import run_settings

    cfg = load_config(DemoConfig, None, [f"out_dir={tmp_path}", "ppo.sampling.max_new_tokens=24", "ppo.target_kl=4"])
    sc = stage_configs(cfg)
    assert sc["ppo"].system_prompt == sc["generate"].system_prompt == cfg.system_prompt
    assert sc["ppo"].prompts == sc["generate"].prompts == str(tmp_path / "prompts_train.jsonl")
    assert sc["evaluate"].prompts == ("redteam", "helpful") and sc["evaluate"].rewards == (f"rm:{tmp_path}/reward",)
    save_config(sc["ppo"], tmp_path / "ppo" / "ppo.yaml")
    rs = run_settings(sc["evaluate"])
    assert rs.sampling == sc["ppo"].sampling and rs.sampling.max_new_tokens == 24
    assert rs.kl_target == 4.0 and rs.system_prompt == cfg.system_prompt and rs.base == cfg.policy
    # SFT first is off by default; on, the online optimiser starts from its adapter; DPO is refused
    assert sc["ppo"].init_adapter is None
    assert stage_configs(load_config(DemoConfig, None, [f"out_dir={tmp_path}", "sft_first=true"]))["ppo"].init_adapter == str(tmp_path / "sft" / "adapter")
    with pytest.raises(ValueError, match="sft_first applies to ppo, rloo and grpo"):
        load_config(DemoConfig, None, ["sft_first=true", "optimizer=dpo"])
    # a harmful set that is not a prompt set would judge nothing as harmful: refused, naming it
    with pytest.raises(ValueError, match=r"harmful_sets names \['red-team'\]"):
        load_config(DemoConfig, None, ["harmful_sets=[red-team]"])


def test_an_incomplete_stage_exits_3_with_its_message(monkeypatch):
    from typer.testing import CliRunner

    import rlhf.cli.demo as cli_demo
    from rlhf.cli import app
    from rlhf.stages import StageIncomplete

    def stopped(cfg, on_stage, on_progress, only=None):  # noqa: ANN001, ANN202
        on_stage("ppo", "start")
        raise StageIncomplete("ppo stopped by the clock after 3 steps")

    monkeypatch.setattr(cli_demo, "run_demo", stopped)
    res = CliRunner().invoke(app, ["demo", "--out", "unused"])
    assert res.exit_code == 3
    assert "incomplete" in res.output and "after 3 steps" in res.output


def test_stage_settings_are_checked_per_finished_stage(tmp_path):
    # Shared by `rlhf demo` and `rlhf constitutional run`: only a finished stage's own settings are binding.
    from rlhf.config import ConfigError
    from rlhf.stages import Stages

    cfg = load_config(DemoConfig, None, [f"out_dir={tmp_path}"])
    stages = Stages(tmp_path / "stages.json")
    stages.finish("reward", {"accuracy": 0.7}, {"config": cfg.reward, "threads": 2})
    assert json.loads((tmp_path / "stage_settings.json").read_text())["reward"]["config"]["lr"] == 1e-4

    again = Stages(tmp_path / "stages.json")  # as a resumed run reads it
    changed = {"reward": {"config": dataclasses.replace(cfg.reward, lr=1e-3, epochs=2.0), "threads": 1},
               "ppo": {"config": cfg.ppo}}  # ppo has not run: its settings are free to change
    with pytest.raises(ConfigError) as e:
        again.check(changed)
    assert "reward: config.epochs 1.0 -> 2.0" in str(e.value) and "reward: config.lr 0.0001 -> 0.001" in str(e.value)
    assert "threads" not in str(e.value) and "ppo" not in str(e.value)
    again.check(changed, rerun="reward")  # --stage reward re-runs it under the new settings
    again.finish("ppo", {}, {"config": cfg.ppo})
    with pytest.raises(ConfigError, match="reward: config.lr"):  # the stages before a re-run one stay binding
        again.check(changed | {"ppo": {"config": dataclasses.replace(cfg.ppo, lr=1.0)}}, rerun="ppo")
    again.check({"reward": {"config": cfg.reward, "threads": 8}})  # threads change speed, not results
    Stages(tmp_path / "old" / "stages.json").check(changed)  # a folder from before this check has nothing to compare


def test_a_copied_run_folder_still_resumes(tmp_path):
    # Paths inside the run folder are stored as "{run}/...": a moved or copied folder keeps its finished stages.
    import shutil

    from rlhf.config import ConfigError
    from rlhf.demo import stage_configs, stage_settings
    from rlhf.stages import Stages

    def settings(root):
        cfg = load_config(DemoConfig, None, [f"out_dir={root}"])
        return stage_settings(cfg, stage_configs(cfg))

    old, new = tmp_path / "a", tmp_path / "b"
    old.mkdir()
    Stages(old / "stages.json").finish("generate", {}, settings(old)["generate"])
    saved = json.loads((old / "stage_settings.json").read_text())["generate"]["config"]
    assert saved["out_dir"] == "{run}/generate" and saved["prompts"] == "{run}/prompts_train.jsonl"
    shutil.copytree(old, new)
    Stages(new / "stages.json").check(settings(new))  # the copy resumes
    changed = settings(new)
    changed["generate"]["config"] = dataclasses.replace(changed["generate"]["config"], num_completions=3)
    with pytest.raises(ConfigError, match="num_completions 8 -> 3"):  # a real change is still refused
        Stages(new / "stages.json").check(changed)
