import torch

from rlhf.reward.data import TextEncoder, length_grouped_batches, pad_batch
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
