"""`rlhf constitutional run` end to end on the tiny model: every stage's output, measured, in one run folder."""

import json

import yaml
from typer.testing import CliRunner

from rlhf.cli import app
from rlhf.constitutional.chain import STAGES
from rlhf.data import read_pairs
from rlhf.demo import ONLINE, SYSTEM_PROMPT
from rlhf.feedback import open_database
from rlhf.feedback.service import ai_agreement

TINY = [
    "train_prompts=8", "eval_prompts=4", "revise.sampling.max_new_tokens=6", "revise.batch_size=8",
    "sft.epochs=1", "sft.batch_size=4", "sample.num_completions=3", "sample.sampling.max_new_tokens=6", "reward.epochs=1",
    "ppo.max_steps=2", "ppo.batch_size=4", "ppo.mini_batch_size=2", "ppo.sampling.max_new_tokens=6", "ppo.checkpoint_every=1",
    "measure.redteam_prompts=4", "measure.helpful_prompts=4", "measure.sampling.max_new_tokens=6", "measure.batch_size=4",
]


def test_constitutional_run_end_to_end_then_resume(tiny_lm_dir, tmp_path):
    out = tmp_path / "cai"
    tiny = str(tiny_lm_dir)
    args = ["constitutional", "run", "--out", str(out), "--policy", tiny, "--feedback-model", tiny,
            "--set", f"reward_trunk={tiny}", "--set", f"measure.relevance_model={tiny}"]
    for s in TINY:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    st = json.loads((out / "stages.json").read_text())
    assert list(st) == list(STAGES)

    # 1. revise: every train prompt answered, critiqued and revised; measured pairwise
    revisions = [json.loads(x) for x in (out / "revise" / "revisions.jsonl").read_text().splitlines()]
    rv = st["revise"]["measure"]
    assert len(revisions) == 8 and rv["prompts"] == 8 and rv["toxicity"]["n"] == 8
    assert rv["kept_for_sft"] == len((out / "revise" / "sft.jsonl").read_text().splitlines()) > 0
    assert 0.0 <= rv["on_topic_revisions"]["value"] <= 1.0 and len(rv["examples"]) == 6
    # 2. sft: a full model folder (adapter merged) that later stages load; measured against the base
    assert (out / "sft" / "policy" / "config.json").exists() and (out / "sft" / "adapter" / "adapter_config.json").exists()
    sf = st["sft"]["measure"]
    assert sf["redteam_toxicity"]["n"] == 4 and sf["helpful_fluency"]["n"] == 4 and sf["helpful_fluency"]["before"] < 0
    # 3. sample: from the SFT policy
    gens = [json.loads(x) for x in (out / "sample" / "completions.jsonl").read_text().splitlines()]
    assert len(gens) == 8 and all(len(g["completions"]) == 3 for g in gens)
    assert yaml.safe_load((out / "sample" / "generate.yaml").read_text())["model"] == str(out / "sft" / "policy")
    # 4. AI feedback: judged in both orders, written to the run's feedback store as an AI labeler
    af = st["ai_feedback"]
    assert af["labeler"] == f"ai:{tiny_lm_dir.name}" and af["stored"] == 8 and af["project"] == "constitutional"
    distinct = sum(1 for g in gens for i in range(3) for j in range(i + 1, 3) if g["completions"][i] != g["completions"][j])
    assert af["measure"]["compared_pairs"] == distinct and 0 <= af["measure"]["position_bias"]["value"] <= 1
    assert len(read_pairs(out / "ai_feedback" / "pairs.jsonl")) == af["pairs"]
    db = open_database(out / "ai_feedback" / "feedback.db")
    (ai,) = ai_agreement(db, "constitutional").labelers
    db.close()
    assert ai.judged == 8 and ai.agreement.items == 0  # nobody else labeled this project
    # 5-6. reward model on the AI's pairs; PPO from the SFT policy
    assert (out / "reward" / "reward_stats.json").exists() and "gold" in st["reward"]["measure"]
    assert yaml.safe_load((out / "ppo" / "ppo.yaml").read_text())["model"] == str(out / "sft" / "policy")
    assert len((out / "ppo" / "metrics.jsonl").read_text().splitlines()) == 2
    # 7. evaluate: the demo's report plus the CAI section, and the same verdict
    summary = json.loads((out / "evaluate" / "summary.json").read_text())
    # both held-out splits, at the demo's sampling and system prompt (so the verdicts compare)
    assert list(summary["splits"]) == ["redteam", "helpful"] and summary["num_prompts"] == 8
    assert summary["settings"]["system_prompt"] == SYSTEM_PROMPT and st["evaluate"]["verdict"]["title"]
    ppo_cfg = yaml.safe_load((out / "ppo" / "ppo.yaml").read_text())
    assert ppo_cfg["system_prompt"] == SYSTEM_PROMPT and ppo_cfg["lr"] == ONLINE["lr"]
    assert yaml.safe_load((out / "sft" / "sft.yaml").read_text())["system_prompt"] == SYSTEM_PROMPT
    html = (out / "evaluate" / "report.html").read_text()
    assert "Reward-hacking check" in html and "Constitutional AI: every stage, measured" in html
    assert html.count("<!-- constitutional-ai -->") == 2 and "Revisions to read" in html
    assert "ai feedback (ai:" in res.output and "report:" in res.output

    # Re-running skips every finished stage; --stage re-runs one alone (the CAI section is replaced, not doubled).
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and res.output.count("already done, skipped") == 7, res.output
    res = CliRunner().invoke(app, args + ["--stage", "evaluate"])
    assert res.exit_code == 0, res.output
    assert (out / "evaluate" / "report.html").read_text().count("<!-- constitutional-ai -->") == 2
