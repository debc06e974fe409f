import json

import pytest
import torch

from rlhf.config import load_config
from rlhf.data import DataError
from rlhf.sft import SFTConfig, collate, encode_example, read_sft_records, response_nll, train_sft


def test_labels_cover_the_response_and_its_eos_only(tiny_tok):
    ids, n_prompt = encode_example(tiny_tok, "my house is too hot", "cool it", 64)
    prompt_ids = tiny_tok(tiny_tok.apply_chat_template([{"role": "user", "content": "my house is too hot"}], tokenize=False, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    assert ids[:n_prompt] == prompt_ids and ids[-1] == tiny_tok.eos_token_id
    batch = collate([(ids, n_prompt), ([5, 6, 7], 1)], tiny_tok.pad_token_id)
    assert batch.labels[0].tolist() == [-100] * n_prompt + ids[n_prompt:]
    # pad == eos here: the padding of row 1 is masked even though it has the EOS id, the real EOS of row 0 is not
    assert batch.labels[1].tolist() == [-100, 6, 7] + [-100] * (len(ids) - 3)
    assert batch.attention_mask[1].tolist() == [1, 1, 1] + [0] * (len(ids) - 3)


def test_truncation_keeps_the_response(tiny_tok):
    ids, n_prompt = encode_example(tiny_tok, "word " * 200, "keep me", 20)
    assert len(ids) == 20 and tiny_tok.decode(ids[n_prompt:-1]) == "keep me"


def test_response_nll_matches_hand_computation(tiny_lm):
    model, tok = tiny_lm
    ex = [encode_example(tok, "hi", "good great", 64), encode_example(tok, "hello there", "nice", 64)]
    batch = collate(ex, tok.pad_token_id)
    with torch.no_grad():
        got = response_nll(model, batch)
        total, count = 0.0, 0
        for ids, n_prompt in ex:
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
            for t in range(n_prompt, len(ids)):
                total -= logp[t - 1, ids[t]].item()
                count += 1
    assert got.item() == pytest.approx(total / count, rel=1e-4)


def test_sft_learns_a_fixed_response(tiny_lm, tmp_path):
    model, tok = tiny_lm
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"say something {i}", "revision": "thank you, that is kind"}) + "\n" for i in range(8)))
    cfg = load_config(SFTConfig, None, ["lora.enabled=false"], data=str(data), out_dir=str(tmp_path / "sft"), epochs=40, lr=1e-2, batch_size=8)
    res = train_sft(cfg, model_and_tokenizer=(model, tok))
    assert res.losses[-1] < 0.3 * res.losses[0]
    assert (res.policy_dir / "config.json").exists() and len((tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()) == res.steps


def test_sft_records_need_a_response_field(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c", "answer": "d"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: needs a response field"):
        read_sft_records(f)


def test_sft_records_from_rankings_take_each_items_top_tier(tmp_path):
    f = tmp_path / "rankings.jsonl"
    rows = [
        {"prompt": "p1", "completions": ["a", "b", "c"], "ranking": [[2], [0, 1]]},  # one winner
        {"prompt": "p2", "completions": ["d", "e", "f"], "ranking": [[0, 2], [1]]},  # a tie at the top: both
        {"prompt": "p3", "completions": ["g", "h"], "ranking": [[0, 1]]},  # everything tied: nothing chosen
        {"prompt": "p4", "response": "plain"},  # ordinary prompt/response rows still read
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_sft_records(f) == [("p1", "c"), ("p2", "d"), ("p2", "f"), ("p4", "plain")]
    f.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"prompt": "p", "completions": ["a"], "ranking": [[3]]}) + "\n")
    with pytest.raises(DataError, match=r"rankings\.jsonl:2: `ranking` names completion \[3\] but the item has 1"):
        read_sft_records(f)


def test_sft_refuses_empty_data(tiny_lm, tmp_path):
    f = tmp_path / "rankings.jsonl"
    f.write_text(json.dumps({"prompt": "p", "completions": ["a", "b"], "ranking": [[0, 1]]}) + "\n")
    cfg = load_config(SFTConfig, None, [], data=str(f), out_dir=str(tmp_path / "sft"))
    with pytest.raises(DataError, match="no \\(prompt, response\\) examples"):
        train_sft(cfg, model_and_tokenizer=tiny_lm)
