import json
import random
import time

import pytest
import torch
from reward_helpers import synthetic_pairs

from rlhf.data import DataError, write_jsonl
from rlhf.reward.config import RewardTrainConfig
from rlhf.reward.functions import load_reward_function
from rlhf.reward.train import evaluate, train_reward_model
from rlhf.types import PreferencePair


def cfg(tmp_path, model, **kw) -> RewardTrainConfig:
    base = dict(model=str(model), out_dir=str(tmp_path / "rm"), max_length=48, batch_size=16, lr=2e-3,
                head_lr=2e-3, epochs=2, tensorboard=False, save_every=5)
    return RewardTrainConfig(**(base | kw))


def test_tiny_decoder_learns_a_synthetic_preference_quickly(tmp_path, tiny_lm_dir):
    t0 = time.perf_counter()
    res = train_reward_model(cfg(tmp_path, tiny_lm_dir, tensorboard=True), synthetic_pairs(240))
    assert time.perf_counter() - t0 < 30
    # 240 prompts: 24 held out for test first, then 22 of the other 216 for validation
    assert res.test_pairs == 24 and res.eval_pairs == 22 and res.train_pairs == 194
    assert res.eval_accuracy > 0.95 and res.test_accuracy > 0.9
    lo, hi = res.test_accuracy_ci
    assert lo <= res.test_accuracy <= hi <= 1.0
    # fresh pairs the model never saw
    rm = load_reward_function(str(res.out_dir))
    test = synthetic_pairs(100, seed=7)
    rc = rm([p.prompt for p in test], [p.chosen for p in test])
    rr = rm([p.prompt for p in test], [p.rejected for p in test])
    assert float((rc > rr).float().mean()) > 0.95
    # the output folder
    out = res.out_dir
    stats = json.loads((out / "reward_stats.json").read_text())
    assert rm.normalization == (stats["mean"], stats["std"]) == res.normalization
    assert stats["n"] == 2 * 194 and stats["std"] > 0
    assert json.loads((out / "eval_metrics.json").read_text())["accuracy"] == res.eval_accuracy
    test_json = json.loads((out / "test_metrics.json").read_text())
    assert test_json["accuracy"] == res.test_accuracy and test_json["accuracy_ci"] == list(res.test_accuracy_ci)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == list(range(1, res.total_steps + 1)) and res.total_steps == 26
    assert [r["step"] for r in records if r["split"] == "eval"] == [13, 26]
    assert any((out / "tb").iterdir()) and (out / "reward.yaml").exists()


def test_tiny_encoder_learns_with_lora(tmp_path, tiny_bert_dir):
    res = train_reward_model(cfg(tmp_path, tiny_bert_dir, lora=True, lr=1e-2, head_lr=1e-2, epochs=3),
                             synthetic_pairs(160))
    assert res.eval_accuracy > 0.9
    saved = (res.out_dir / "model.safetensors")
    assert saved.exists() and not (res.out_dir / "adapter_config.json").exists()  # LoRA merged
    rm = load_reward_function(f"rm:{res.out_dir}")
    assert rm.model.spec.pooling == "mean"
    p = synthetic_pairs(50, seed=3)
    prompts = [x.prompt for x in p]
    acc = float((rm(prompts, [x.chosen for x in p]) > rm(prompts, [x.rejected for x in p])).float().mean())
    assert acc > 0.9


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, tiny_lm_dir):
    pairs = synthetic_pairs(96)
    kw = dict(epochs=2, batch_size=8, eval_every=6, dropout=True)  # dropout on: RNG state must be restored too
    full = train_reward_model(cfg(tmp_path / "a", tiny_lm_dir, **kw), pairs)

    class Crash(Exception):
        pass

    def crash_at_13(info):
        if info.step == 13:
            raise Crash

    c = cfg(tmp_path / "b", tiny_lm_dir, **kw)
    with pytest.raises(Crash):
        train_reward_model(c, pairs, on_step=crash_at_13)
    resumed = train_reward_model(c, pairs)
    assert resumed.resumed_from == 12  # last eval/checkpoint before the crash (save_every=5, eval_every=6: 5,6,10,12)
    assert resumed.steps == full.steps == 20
    assert resumed.test.to_dict() == full.test.to_dict() and resumed.test_accuracy_ci == full.test_accuracy_ci
    assert resumed.eval.to_dict() == full.eval.to_dict()
    assert resumed.normalization == full.normalization
    def records(r):  # timings differ between runs; everything else must not
        rows = [json.loads(x) for x in (r.out_dir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in x.items() if k != "pairs_per_s"} for x in rows]

    assert records(resumed) == records(full)


def test_resume_refuses_a_changed_config(tmp_path, tiny_lm_dir):
    pairs = synthetic_pairs(40)
    train_reward_model(cfg(tmp_path, tiny_lm_dir, epochs=1), pairs)
    with pytest.raises(ValueError, match="different config"):
        train_reward_model(cfg(tmp_path, tiny_lm_dir, epochs=1, lr=1e-4), pairs)
    res = train_reward_model(cfg(tmp_path, tiny_lm_dir, epochs=1, lr=1e-4, resume=False), pairs)
    assert res.resumed_from == 0


def test_early_stopping_stops_when_eval_loss_stops_improving(tmp_path, tiny_lm_dir):
    res = train_reward_model(cfg(tmp_path, tiny_lm_dir, lr=0.0, head_lr=0.0, epochs=10, eval_every=2, patience=2),
                             synthetic_pairs(64))
    assert res.stopped_early and res.steps == 6 and res.best_step == 2 and res.total_steps == 40


def test_bad_pairs_files_give_clear_errors(tmp_path, tiny_lm_dir):
    missing = tmp_path / "missing.jsonl"
    write_jsonl(missing, [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a"}])
    with pytest.raises(DataError, match=r"missing.jsonl:2: missing field 'rejected'"):
        train_reward_model(cfg(tmp_path, tiny_lm_dir, pairs=str(missing)))
    same = tmp_path / "same.jsonl"
    write_jsonl(same, [{"prompt": "p", "chosen": "a", "rejected": "a"}] * 3)
    with pytest.raises(DataError, match="same.jsonl: 'chosen' equals 'rejected' in every pair"):
        train_reward_model(cfg(tmp_path, tiny_lm_dir, pairs=str(same)))
    with pytest.raises(DataError, match="'chosen' equals 'rejected' in every pair"):
        train_reward_model(cfg(tmp_path, tiny_lm_dir), [PreferencePair("p", "x", "x")] * 2)


def test_evaluate_counts_pairs_in_both_orders(tmp_path, tiny_lm_dir):
    from rlhf.reward.model import RewardModel
    from rlhf.reward.train import encode

    torch.manual_seed(0)
    rm = RewardModel.from_pretrained(tiny_lm_dir)
    pairs = synthetic_pairs(20)
    fwd = evaluate(rm, encode(rm, pairs, 0.0))
    swapped = [PreferencePair(p.prompt, p.rejected, p.chosen) for p in pairs]
    bwd = evaluate(rm, encode(rm, swapped, 0.0))
    assert fwd.accuracy + bwd.accuracy == pytest.approx(1.0)
    assert fwd.mean_margin == pytest.approx(-bwd.mean_margin, abs=1e-5)


def test_resume_refuses_changed_data(tmp_path, tiny_lm_dir):
    train_reward_model(cfg(tmp_path, tiny_lm_dir, epochs=1), synthetic_pairs(40))
    with pytest.raises(ValueError, match="different config or data"):
        train_reward_model(cfg(tmp_path, tiny_lm_dir, epochs=1), synthetic_pairs(40, seed=1))


def test_test_split_is_by_prompt_and_used_for_nothing_else():
    from rlhf.reward.train import hold_out_prompts, split_pairs

    pairs = [PreferencePair(f"prompt {i // 3}", f"good {i}", f"bad {i}") for i in range(60)]  # 20 prompts x 3 pairs
    rest, test = hold_out_prompts(pairs, 0.1, seed=1)
    assert len(test) == 6 and len({p.prompt for p in test}) == 2  # whole prompts: 2 of 20, all 3 pairs each
    assert not {p.prompt for p in rest} & {p.prompt for p in test}
    train, val = split_pairs(rest, 0.1, seed=0)
    assert not {p.prompt for p in val} & {p.prompt for p in test}
    assert hold_out_prompts(pairs, 0.1, seed=1) == (rest, test)  # seeded
    with pytest.raises(DataError, match="at least 2 distinct prompts"):
        hold_out_prompts(pairs[:3], 0.1, seed=0)


def test_test_accuracy_ci_resamples_prompts():
    from rlhf.evaluate.metrics import bootstrap_mean

    # 2 prompts: one with 9 correct pairs, one with 1 wrong pair; by pair the CI would be narrow around 0.9
    correct = [1.0] * 9 + [0.0]
    groups = ["a"] * 9 + ["b"]
    by_prompt = bootstrap_mean(correct, groups=groups, n_boot=400)
    by_pair = bootstrap_mean(correct, n_boot=400)
    assert by_prompt.value == by_pair.value == 0.9
    assert by_prompt.low == 0.0 and by_pair.low > 0.5  # resampling prompts can draw prompt b twice


def test_test_fraction_zero_keeps_the_old_split(tmp_path, tiny_lm_dir):
    res = train_reward_model(cfg(tmp_path, tiny_lm_dir, test_fraction=0.0, epochs=1), synthetic_pairs(40))
    assert res.test is None and res.test_pairs == 0 and res.eval_pairs == 4 and res.train_pairs == 36
    assert not (res.out_dir / "test_metrics.json").exists()


def ranked_pairs(n_prompts: int, k: int = 4, seed: int = 0) -> list[PreferencePair]:
    """Every pair of a ranking of k responses per prompt: the response with more 'great' is chosen."""
    rng = random.Random(seed)
    words = "the quick brown fox jumps over lazy dog".split()
    pairs = []
    for i in range(n_prompts):
        resp = [" ".join(rng.sample(words, 4) + ["great"] * g) for g in range(k)]
        pairs += [PreferencePair(f"question {i}", resp[hi], resp[lo]) for hi in range(k) for lo in range(hi)]
    return pairs


def test_prompt_batches_train_on_whole_rankings(tmp_path, tiny_lm_dir):
    pairs = ranked_pairs(60)
    res = train_reward_model(cfg(tmp_path, tiny_lm_dir, prompts_per_step=4), pairs)
    # 60 prompts x 6 pairs: 6 prompts held out for test, 5 of the other 54 for validation, 49 to train on
    assert (res.test_pairs, res.eval_pairs, res.train_pairs) == (36, 30, 294)
    assert res.total_steps == 2 * 13  # ceil(49 / 4) steps an epoch, 2 epochs
    assert res.eval_accuracy > 0.9 and res.test_accuracy > 0.9
    assert round(res.pairs_per_s * res.train_seconds) == 2 * 294  # every training pair, once an epoch
    # the same pairs shuffled across prompts, 16 a step: ceil(294 / 16) steps an epoch
    assert train_reward_model(cfg(tmp_path / "shuffled", tiny_lm_dir), pairs).total_steps == 2 * 19
