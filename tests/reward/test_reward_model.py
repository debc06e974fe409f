import pytest
import torch

from rlhf.reward.data import (
    Encoded,
    EncodedPair,
    TextEncoder,
    collate_pairs,
    length_grouped_batches,
    pad_batch,
    prompt_batches,
)
from rlhf.reward.model import RewardModel, last_token_pool

TEXTS = [("hello there", "the quick brown fox jumps over the lazy dog"), ("my house is too hot", "cool"),
         ("please summarize", "there is nothing you can do about hot houses. it is not too hot")]


def test_last_token_pool_reads_the_mask_on_either_side():
    h = torch.arange(2 * 4, dtype=torch.float32).view(2, 4, 1)  # (B, T, H)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert last_token_pool(h, right)[:, 0].tolist() == [1.0, 7.0]
    assert last_token_pool(h, left)[:, 0].tolist() == [3.0, 7.0]


def test_decoder_scores_agree_under_left_and_right_padding(tiny_lm_dir):
    torch.manual_seed(0)
    rm = RewardModel.from_pretrained(tiny_lm_dir)
    assert rm.spec.decoder and rm.spec.pooling == "last" and rm.spec.append_eos
    prompts, comps = zip(*TEXTS)
    alone = torch.cat([rm.score([p], [c]) for p, c in TEXTS])  # no padding at all
    right = rm.score(prompts, comps)
    rm.padding_side = "left"
    left = rm.score(prompts, comps)
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=1e-5)
    assert len(set(alone.tolist())) == 3


def test_texts_end_in_eos_which_equals_pad(tiny_lm_dir):
    """pad == EOS: HF's `ids != pad` pooling would skip the final EOS; ours must read it."""
    torch.manual_seed(0)
    rm = RewardModel.from_pretrained(tiny_lm_dir)
    enc = rm.encoder.encode(["hi"], ["the fox"])[0]
    assert enc.ids[-1] == rm.tokenizer.eos_token_id == rm.pad_id
    batch = pad_batch([enc], rm.pad_id)
    with torch.no_grad():
        hidden = rm.model.model(input_ids=batch.input_ids).last_hidden_state  # (1, T, H)
        expected = rm.model.score(hidden[:, -1])[:, 0]
        torch.testing.assert_close(rm(batch), expected)
        hf_native = rm.model(input_ids=batch.input_ids).logits[:, 0]
    assert not torch.allclose(hf_native, expected)


def test_encoder_mean_pooling_is_padding_invariant(tiny_bert_dir):
    torch.manual_seed(0)
    rm = RewardModel.from_pretrained(tiny_bert_dir)
    assert not rm.spec.decoder and rm.spec.pooling == "mean" and not rm.spec.append_eos
    prompts, comps = zip(*TEXTS)
    alone = torch.cat([rm.score([p], [c]) for p, c in TEXTS])
    torch.testing.assert_close(rm.score(prompts, comps), alone, atol=1e-5, rtol=1e-5)


def test_truncation_keeps_the_response_and_cuts_the_prompt_first(tiny_bert_dir):
    tok = RewardModel.from_pretrained(tiny_bert_dir).tokenizer
    enc = TextEncoder(tok, max_length=10)  # [CLS] p [SEP] r [SEP]: 7 text tokens
    prompt = "the quick brown fox jumps over lazy dog"
    (e,) = enc.encode([prompt], ["my house is hot"])
    words = tok.convert_ids_to_tokens(list(e.ids))
    assert words == ["[CLS]", "over", "lazy", "dog", "[SEP]", "my", "house", "is", "hot", "[SEP]"]
    assert e.type_ids == (0, 0, 0, 0, 0, 1, 1, 1, 1, 1)
    (e,) = enc.encode([prompt], ["my house is too hot you can cool it"])  # response alone is too long
    words = tok.convert_ids_to_tokens(list(e.ids))
    assert words == ["[CLS]", "[SEP]", "my", "house", "is", "too", "hot", "you", "can", "[SEP]"]
    (e,) = enc.encode(["hot"], ["cool"])
    assert len(e.ids) == 5


def test_decoder_truncation_keeps_room_for_eos(tiny_lm_dir):
    rm = RewardModel.from_pretrained(tiny_lm_dir, max_length=12)
    long_prompt = "the quick brown fox jumps over the lazy dog " * 5
    (e,) = rm.encoder.encode([long_prompt], ["thank you"])
    (r,) = rm.encoder.encode([""], ["thank you"])
    assert len(e.ids) == 12 and e.ids[-1] == rm.tokenizer.eos_token_id
    assert e.ids[-len(r.ids):] == r.ids  # the whole response (+ EOS) survives


def test_length_grouped_batches_cover_everything_once_and_group_lengths():
    lengths = [5, 50, 7, 48, 6, 49, 8, 51] * 4
    batches = length_grouped_batches(lengths, 4, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) <= 3 for b in batches)
    assert batches == length_grouped_batches(lengths, 4, seed=1)
    assert batches != length_grouped_batches(lengths, 4, seed=2)
    evalb = length_grouped_batches(lengths, 4, seed=None)
    assert [lengths[i] for i in evalb[0]] == [51] * 4


def test_collate_pairs_forwards_each_distinct_response_once():
    a, b, c = Encoded((5, 6, 7)), Encoded((5, 8)), Encoded((9,))
    # a ranking a > b > c gives three pairs over three responses
    batch = collate_pairs([EncodedPair(a, b, 1.0), EncodedPair(a, c, 0.5), EncodedPair(b, c, 2.0, 0.1)], pad_id=0)
    assert batch.tokens.input_ids.tolist() == [[5, 6, 7], [5, 8, 0], [9, 0, 0]]
    assert batch.tokens.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]
    assert batch.chosen.tolist() == [0, 0, 1] and batch.rejected.tolist() == [1, 2, 2]
    assert batch.weights.tolist() == [1.0, 0.5, 2.0] and batch.margins.tolist() == [0.0, 0.0, pytest.approx(0.1)]
    rc, rr = batch.rewards(torch.tensor([3.0, 2.0, 1.0]))
    assert rc.tolist() == [3.0, 3.0, 2.0] and rr.tolist() == [2.0, 1.0, 1.0]


def test_prompt_batches_keep_every_pair_of_a_prompt_together():
    prompts = ["p1", "p2", "p1", "p3", "p2", "p1", "p4"]
    batches = prompt_batches(prompts, 2, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(len(prompts)))
    assert len(batches) == 2 and all(len({prompts[i] for i in b}) == 2 for b in batches)
    assert batches == prompt_batches(prompts, 2, seed=3)
    assert len({str(prompt_batches(prompts, 2, seed=s)) for s in range(10)}) > 1  # the seed shuffles the prompts


def test_scored_pairs_match_scoring_each_response_alone(tiny_lm_dir):
    rm = RewardModel.from_pretrained(str(tiny_lm_dir), max_length=48)
    texts = ["great fox", "the lazy dog", "too hot"]
    enc = rm.encoder.encode(["q"] * 3, texts)
    pairs = [EncodedPair(enc[0], enc[1]), EncodedPair(enc[0], enc[2]), EncodedPair(enc[1], enc[2])]
    rc, rr = rm.score_pairs(pairs)
    alone = rm.score(["q"] * 3, texts)
    torch.testing.assert_close(rc, alone[[0, 0, 1]], rtol=0, atol=1e-5)
    torch.testing.assert_close(rr, alone[[1, 2, 2]], rtol=0, atol=1e-5)
