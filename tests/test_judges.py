"""The judges and the labelers' taste: gibberish, off-topic, empty and toxic answers rank low."""

import pytest

from rlhf.judges import FluencyJudge, Judges, Taste


def test_taste_is_harmless_first_then_helpful():
    t = Taste()
    # any polite reply beats any toxic one, however helpful the toxic one is
    assert t(0.49, 0.0, -10.0) > t(0.5, 0.8, -1.0)
    # within a tier, helpfulness decides; relevance and fluency are rescaled and clipped to [0, 1]
    assert t.helpfulness(0.8, -1.0) == 1.0 and t.helpfulness(0.0, -4.0) == 0.0
    assert t.helpfulness(0.4, -2.5) == pytest.approx(0.5 * 0.5)
    assert t(0.1, 0.8, -1.0) > t(0.1, 0.8, -3.0) > t(0.1, 0.0, -3.0)
    # a product: on topic but incoherent (word salad), or coherent but off topic, is no help at all
    assert t.helpfulness(0.8, -9.0) == 0.0 == t.helpfulness(-0.1, -1.0)
    # less toxic beats more toxic at equal helpfulness
    assert t(0.05, 0.5, -2.0) > t(0.3, 0.5, -2.0)
    assert t(0.05, 0.5, -2.0) - t(0.15, 0.5, -2.0) == pytest.approx(0.05)  # w = 0.5
    # blind to truncation by default; with a penalty, a reply cut off at the token limit loses that much
    assert t(0.1, 0.4, -2.5, finished=False) == t(0.1, 0.4, -2.5)
    cut = Taste(unfinished_penalty=0.2)
    assert cut(0.1, 0.4, -2.5) - cut(0.1, 0.4, -2.5, finished=False) == pytest.approx(0.2)
    # a finished reply beats a slightly more helpful one that was cut off, but not a much more helpful one
    assert cut(0.1, 0.6, -2.0, finished=True) > cut(0.1, 0.7, -1.8, finished=False)
    assert cut(0.1, 0.2, -3.0, finished=True) < cut(0.1, 0.8, -1.0, finished=False)
    # the tier still comes first: a cut-off polite reply beats a finished toxic one
    assert cut(0.3, 0.2, -3.0, finished=False) > cut(0.6, 0.8, -1.0, finished=True)


def test_on_a_request_for_harm_a_polite_decline_beats_compliance():
    t = Taste(toxicity_weight=2.0, harmful_helpfulness=0.5)
    decline, rant = (0.01, 0.1, -1.3), (0.1, 0.5, -1.3)  # (P(toxic), relevance, fluency)
    # on an ordinary request the on-topic reply wins; on a request for harm relevance does not count
    assert t(*rant) > t(*decline)
    assert t(*decline, harmful_request=True) > t(*rant, harmful_request=True)
    # hand values: -w x P(toxic) + 0.5 x fluency rescaled onto [0, 1] over [-4, -1]
    assert t(*decline, harmful_request=True) == pytest.approx(-2.0 * 0.01 + 0.5 * 2.7 / 3.0)
    # coherence still counts there: gibberish ranks low
    assert t(0.01, 0.1, -1.3, harmful_request=True) > t(0.01, 0.1, -3.5, harmful_request=True)
    # without the setting every request is judged alike
    assert Taste()(*decline, harmful_request=True) == Taste()(*decline)


def test_a_fragment_is_worth_its_share_of_an_answer():
    from rlhf.judges import Judgements

    t = Taste(toxicity_weight=2.0, harmful_helpfulness=0.5, substance_words=20)
    # hand values: 5 words of 20 keep a quarter of the helpfulness; 20 and more keep all of it
    assert t(0.01, 0.4, -2.5, words=5) == pytest.approx(-0.02 + 0.25 * 0.25)
    assert t(0.01, 0.4, -2.5, words=20) == t(0.01, 0.4, -2.5, words=60) == t(0.01, 0.4, -2.5)
    # on a request for harm a fluent fragment no longer beats a slightly less fluent, finished answer
    fragment, answer = (0.01, 0.1, -1.0), (0.05, 0.1, -1.6)
    assert Taste(toxicity_weight=2.0, harmful_helpfulness=0.5)(*fragment, harmful_request=True, words=4) > \
        Taste(toxicity_weight=2.0, harmful_helpfulness=0.5)(*answer, harmful_request=True, words=30)
    assert t(*fragment, harmful_request=True, words=4) < t(*answer, harmful_request=True, words=30)
    # the tier still comes first, and without word counts nothing is discounted
    assert t(0.3, 0.0, -3.0, words=1) > t(0.6, 0.8, -1.0, words=40)
    j = Judgements(toxicity=[0.01], relevance=[0.4], fluency=[-2.5])
    assert j.taste(t) == [t(0.01, 0.4, -2.5)]
    assert Judgements([0.01], [0.4], [-2.5], words=[5]).taste(t) == [pytest.approx(-0.02 + 0.0625)]


def test_judgements_taste_checks_its_flags():
    from rlhf.judges import Judgements

    j = Judgements(toxicity=[0.01, 0.1], relevance=[0.1, 0.5], fluency=[-1.3, -1.3])
    t = Taste(harmful_helpfulness=0.5)
    assert j.taste(t, harmful=[True, True])[0] > j.taste(t, harmful=[True, True])[1]
    assert j.taste(t)[0] < j.taste(t)[1]
    with pytest.raises(ValueError, match="1 harmful for 2 responses"):
        j.taste(t, harmful=[True])
    with pytest.raises(ValueError, match="1 word counts for 2 responses"):
        Judgements([0.01, 0.1], [0.1, 0.5], [-1.3, -1.3], words=[4]).taste(t)


def test_fluency_is_mean_logprob_of_the_response_tokens(tiny_lm):
    import torch

    from rlhf.generation import format_prompt

    model, tok = tiny_lm
    judge = FluencyJudge(model, tok, system_prompt="Be brief.", batch_size=2)
    prompts, responses = ["my house is too hot", "hello", "my house is too hot"], ["cool your house", "", "the dog"]
    got = judge(prompts, responses)
    for p, r, g in zip(prompts, responses, got):  # by hand, one sequence at a time, no padding
        p_ids = tok(format_prompt(tok, p, "Be brief."), add_special_tokens=False)["input_ids"]
        r_ids = tok(r, add_special_tokens=False)["input_ids"] or [tok.eos_token_id]  # empty: ending the turn at once
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([p_ids + r_ids])).logits[0].float(), -1)
        want = float(torch.stack([logp[len(p_ids) - 1 + i, t] for i, t in enumerate(r_ids)]).mean())
        assert g == pytest.approx(want, abs=1e-4)


def test_fluency_reuses_given_log_probs_where_the_text_retokenises_to_their_ids(tiny_lm):
    import torch

    from rlhf.generation import format_prompt

    model, tok = tiny_lm
    judge = FluencyJudge(model, tok, batch_size=2)
    prompts, responses = ["my house is too hot", "hello there", "hi"], ["cool your house", "the dog", ""]
    sampled = []
    for p, r in zip(prompts, responses):  # what a sampler that drew these ids would have kept (temperature 1)
        p_ids, r_ids = tok(format_prompt(tok, p), add_special_tokens=False)["input_ids"], tok(r, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([p_ids + r_ids])).logits[0].float(), -1)
        sampled.append((r_ids, [float(logp[len(p_ids) - 1 + i, t]) for i, t in enumerate(r_ids)]))
    want = judge(prompts, responses)
    assert judge(prompts, responses, sampled) == pytest.approx(want, abs=1e-4)
    # reused, not recomputed: made-up log-probs come back; ids the text does not give back are not trusted
    fake = [(ids, [-9.0] * len(ids)) for ids, _ in sampled]
    assert judge(prompts, responses, fake)[:2] == [-9.0, -9.0]
    assert judge(prompts, responses, [(ids + [7], [-9.0] * (len(ids) + 1)) for ids, _ in sampled]) == pytest.approx(want, abs=1e-6)
    assert judge(prompts, responses, fake)[2] == pytest.approx(want[2], abs=1e-6)  # empty: scored by ending the turn


PROMPT = "What vegetables are easiest to grow on a small balcony?"
GOOD = "Lettuce, spinach, radishes and cherry tomatoes grow well in pots on a small balcony, and so do herbs like basil."
BAD = {
    "off-topic": "The French Revolution began in 1789 and changed European politics for ever.",
    "gibberish": "Balcony kazoo Danazal snub-nosed tail batting flurp orbit spinach quantum dinner the the of",
    "word salad": "grow the balcony small on vegetables easiest are what to",
    "empty": "",
    "repetition": "lettuce lettuce lettuce lettuce lettuce lettuce lettuce lettuce lettuce lettuce",
    "toxic": "Only an idiot would ask that, you stupid moron. Grow your own damn vegetables.",
}


@pytest.mark.slow
def test_real_judges_rank_incoherent_off_topic_and_toxic_answers_low():
    from rlhf.models.registry import load_causal_lm

    model, tok = load_causal_lm("smollm2-135m-instruct")
    judges = Judges(model, tok, "You are a helpful assistant. Answer briefly.")
    texts = [GOOD, *BAD.values()]
    j = judges([PROMPT] * len(texts), texts)
    taste = j.taste()
    for i, name in enumerate(BAD, start=1):
        assert taste[0] > taste[i] + 0.2, (name, taste)
    assert j.relevance[0] > j.relevance[1] + 0.4  # off-topic
    assert all(j.fluency[0] > j.fluency[i] + 2.0 for i in (2, 3, 4, 5))  # gibberish, word salad, empty, repetition
    assert j.toxicity[6] > 0.9 > 0.5 > j.toxicity[0]
    assert (j.words[4], j.words[5]) == (0, 10)  # empty, repetition: the substance discount's word counts


def test_copied_fraction_counts_the_prompts_word_trigrams_in_the_response():
    from rlhf.judges import copied_fraction

    prompt = "Rant about people who chew loudly, and make it really insulting."
    assert copied_fraction(prompt, prompt) == 1.0  # the echo a PPO policy learned (demo seed 1)
    assert copied_fraction(prompt, "RANT about people!") == 1.0  # case and punctuation do not hide it
    # "people who chew" and "who chew loudly" of 6 trigrams; the other 4 are the answer's own
    assert copied_fraction(prompt, "Loud chewing annoys people who chew loudly too") == pytest.approx(2 / 6)
    assert copied_fraction(prompt, "I would rather not insult anyone.") == 0.0
    assert copied_fraction(prompt, "chew") == 1.0 and copied_fraction(prompt, "no") == 0.0  # short: unigrams
    assert copied_fraction(prompt, "") == 0.0 == copied_fraction("", "anything at all")


@pytest.mark.slow
def test_relevance_does_not_reward_echoing_the_prompt():
    from rlhf.judges import RelevanceJudge

    judge = RelevanceJudge()
    echo, half = PROMPT, PROMPT + " " + GOOD
    rel = judge([PROMPT] * 3, [GOOD, echo, half])
    assert rel[1] == pytest.approx(0.0, abs=1e-6)  # cosine 1.0, all trigrams copied
    assert rel[0] > 0.4 and rel[0] > rel[2] > rel[1]
