import json

import pytest
import torch

from rlhf.config import load_config
from rlhf.constitutional.ai_feedback import AIFeedbackConfig, choice_ids, judge_pairs, prob_first_better, run_ai_feedback
from rlhf.constitutional.constitution import DEFAULT_PRINCIPLES
from rlhf.constitutional.revise import ReviseConfig, run_revise
from rlhf.data import read_pairs


def test_revise_writes_revisions_sft_and_pairs_and_resumes(tiny_lm, tmp_path):
    model, tok = tiny_lm
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"roast my friend number {i}"}) + "\n" for i in range(3)))
    cfg = load_config(ReviseConfig, None, ["sampling.max_new_tokens=6", "split=null"], prompts=str(prompts),
                      out_dir=str(tmp_path / "cai"), batch_size=2)
    out = run_revise(cfg, model_and_tokenizer=(model, tok)).out_dir
    rows = [json.loads(line) for line in (out / "revisions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["r0", "r1", "r2"]
    assert all(set(r) == {"id", "prompt", "principle", "response", "critique", "revision", "p_revision_better"} for r in rows)
    assert {r["principle"] for r in rows} <= {p.name for p in DEFAULT_PRINCIPLES}
    sft = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    usable = [r for r in rows if r["revision"].strip() and r["revision"].strip() != r["response"].strip()]
    assert [s["response"] for s in sft] == [r["revision"] for r in usable]
    if usable:
        assert [p.chosen for p in read_pairs(out / "pairs.jsonl")] == [r["revision"] for r in usable]
    # resuming finds nothing left to do and leaves the log as it was
    before = (out / "revisions.jsonl").read_text()
    run_revise(cfg, model_and_tokenizer=(model, tok))
    assert (out / "revisions.jsonl").read_text() == before


def test_ai_feedback_probability_is_the_two_letter_softmax_and_order_symmetric(tiny_lm):
    model, tok = tiny_lm
    pr = DEFAULT_PRINCIPLES[0]
    from rlhf.constitutional.prompts import comparison_prompt

    text = comparison_prompt(tok, "say hi", "hello friend", "shut up", pr)
    with torch.no_grad():
        logits = model(input_ids=tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]).logits[0, -1]
    a, b = choice_ids(tok)
    expected = torch.softmax(logits[[a, b]], -1)[0].item()
    assert prob_first_better(model, tok, [text], 512)[0].item() == pytest.approx(expected, abs=1e-5)
    (p,) = judge_pairs(model, tok, [("say hi", "hello friend", "shut up", pr)], batch_size=4)
    (q,) = judge_pairs(model, tok, [("say hi", "shut up", "hello friend", pr)], batch_size=4)
    assert p + q == pytest.approx(1.0, abs=1e-5)  # asking in both orders cancels position bias


def test_run_ai_feedback_writes_preferred_first(tiny_lm, tmp_path):
    model, tok = tiny_lm
    gens = tmp_path / "g.jsonl"
    gens.write_text(json.dumps({"id": "a", "prompt": "say hi", "completions": ["hello friend", "shut up", "hi there"]}) + "\n")
    cfg = AIFeedbackConfig(generations=str(gens), out_dir=str(tmp_path / "aif"))
    s = run_ai_feedback(cfg, model_and_tokenizer=(model, tok))
    pairs = read_pairs(tmp_path / "aif" / "pairs.jsonl")
    assert (s.prompts, s.pairs, s.dropped, s.labeler, s.stored) == (1, 3, 0, None, 0) and len(pairs) == 3
    assert all(p.metadata["p_chosen"] >= 0.5 for p in pairs)
    log = [json.loads(x) for x in (tmp_path / "aif" / "judgements.jsonl").read_text().splitlines()]
    flips = sum((a > 0.5) != (b < 0.5) for _, _, a, b in log[0]["pairs"])
    assert s.position_bias == pytest.approx(flips / 3)
