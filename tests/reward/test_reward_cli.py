import json

from reward_helpers import synthetic_pairs
from typer.testing import CliRunner

from rlhf.cli import app
from rlhf.data import write_jsonl

runner = CliRunner()


def test_train_reward_then_score(tmp_path, tiny_lm_dir):
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, [p.to_dict() for p in synthetic_pairs(80)])
    out = tmp_path / "rm"
    res = runner.invoke(app, ["train-reward", "--pairs", str(pairs), "--model", str(tiny_lm_dir), "-o", str(out),
                              "--epochs", "1", "-s", "max_length=48", "-s", "tensorboard=false", "-s", "lr=2e-3"])
    assert res.exit_code == 0, res.output
    assert "Validation pairwise accuracy" in res.output and "predicted" in res.output
    assert "Test pairwise accuracy" in res.output and "95% CI" in res.output
    assert (out / "reward_stats.json").exists() and (out / "model.safetensors").exists()

    recs = tmp_path / "texts.jsonl"
    texts = ["great fox", "lazy dog", "hot"]
    write_jsonl(recs, [{"id": i, "prompt": "q", "completion": c} for i, c in enumerate(texts)])
    scored = tmp_path / "scored.jsonl"
    res = runner.invoke(app, ["score", str(recs), "-r", str(out), "-o", str(scored), "--normalize"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in scored.read_text().splitlines()]
    assert [r["id"] for r in rows] == [0, 1, 2] and all(isinstance(r["reward"], float) for r in rows)
    res = runner.invoke(app, ["score", str(recs), "-r", "python:test_reward_functions:lengths", "-o", str(scored)])
    assert res.exit_code == 0, res.output
    assert [json.loads(x)["reward"] for x in scored.read_text().splitlines()] == [9.0, 8.0, 3.0]


def test_cli_reports_bad_input_without_traceback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [{"prompt": "p", "chosen": "a"}])
    res = runner.invoke(app, ["train-reward", "--pairs", str(bad), "-o", str(tmp_path / "rm")])
    assert res.exit_code == 2 and "missing field 'rejected'" in res.output
    res = runner.invoke(app, ["score", str(bad), "-r", "scorer:sentiment", "-o", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2 and "missing field 'completion'" in res.output
