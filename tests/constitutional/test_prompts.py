"""Every CAI prompt goes through the model's chat template, and long inputs are cut part by part."""

import copy

import torch

import rlhf.constitutional.revise as revise_mod
from rlhf.config import load_config
from rlhf.constitutional.ai_feedback import prob_first_better
from rlhf.constitutional.constitution import DEFAULT_CONSTITUTION, DEFAULT_PRINCIPLES
from rlhf.constitutional.prompts import (
    COMPARISON,
    comparison_prompt,
    critique_messages,
    fit_parts,
    format_conversation,
    revision_messages,
    water_level,
)
from rlhf.constitutional.revise import ReviseConfig, critique_and_revise
from rlhf.types import Prompt

POLITE = DEFAULT_PRINCIPLES[0]


def chat(tok, messages):
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_critique_and_revision_conversations_use_the_chat_template(tiny_tok):
    msgs = critique_messages("roast my friend", "you are dumb", POLITE)
    assert msgs == [{"role": "user", "content": "roast my friend"}, {"role": "assistant", "content": "you are dumb"},
                    {"role": "user", "content": POLITE.critique}]
    assert format_conversation(tiny_tok, msgs, 768) == chat(tiny_tok, msgs)
    rev = revision_messages("roast my friend", "you are dumb", "it insults", POLITE)
    assert rev[-2:] == [{"role": "assistant", "content": "it insults"}, {"role": "user", "content": POLITE.revision}]
    text = format_conversation(tiny_tok, rev, 768)
    assert text == chat(tiny_tok, rev) and text.endswith(f"{POLITE.revision}<|im_end|>\n<|im_start|>assistant\n")
    # few-shot: the worked examples come first, as earlier turns, with the same principle's requests
    ex = DEFAULT_CONSTITUTION.examples[0]
    shot = critique_messages("roast my friend", "you are dumb", POLITE, DEFAULT_CONSTITUTION.examples[:1])
    assert [m["content"] for m in shot[:6]] == [ex.request, ex.response, POLITE.critique, ex.critique, POLITE.revision, ex.revision]
    assert shot[6:] == msgs


def test_critique_and_revise_sends_the_templated_conversations(tiny_lm, monkeypatch):
    model, tok = tiny_lm
    sent = []
    real = revise_mod._continue

    def spy(m, t, texts, *args):
        sent.append(list(texts))
        return real(m, t, texts, *args)

    monkeypatch.setattr(revise_mod, "_continue", spy)
    cfg = load_config(ReviseConfig, None, ["sampling.max_new_tokens=4", "few_shot=1", "max_context_tokens=4000"])
    (r,) = critique_and_revise((model, tok), (model, tok), [Prompt("x1", "roast my friend")], DEFAULT_CONSTITUTION, cfg)
    pr = next(p for p in DEFAULT_PRINCIPLES if p.name == r.principle)
    ex = DEFAULT_CONSTITUTION.examples[:1]
    assert sent[0] == [chat(tok, critique_messages("roast my friend", r.response, pr, ex))]
    assert sent[1] == [chat(tok, revision_messages("roast my friend", r.response, r.critique, pr, ex))]


def test_comparison_prompt_uses_the_chat_template_or_leads_a_base_model_to_the_letter(tiny_tok):
    text = comparison_prompt(tiny_tok, "say hi", "hello friend", "shut up", POLITE)
    content = COMPARISON.format(prompt="say hi", comparison=POLITE.comparison, first="hello friend", second="shut up")
    assert text == chat(tiny_tok, [{"role": "user", "content": content}])
    plain = copy.deepcopy(tiny_tok)
    plain.chat_template = None
    assert comparison_prompt(plain, "say hi", "hello friend", "shut up", POLITE) == content + "\n\nAnswer: ("


def test_water_level_and_fit_parts(tiny_tok):
    assert water_level([10, 100, 300], 200) == 95  # 10 + 95 + 95
    assert water_level([10, 20], 100) == 20
    short, long_ = "hello friend", "the quick brown fox jumps over the lazy dog " * 40
    out = fit_parts(tiny_tok, [short, long_], 60)
    assert out[0] == short and out[1].startswith("the quick brown fox") and out[1].endswith(" …")
    assert sum(len(tiny_tok(p, add_special_tokens=False)["input_ids"]) for p in out) <= 60


def test_truncation_keeps_the_request_and_both_responses(tiny_lm):
    model, tok = tiny_lm
    request = "please summarize the following conversation in one sentence. " + "my house is too hot. " * 60
    a = "you can cool your house with air conditioning. " * 60
    b = "thank you, that is kind and helpful."
    full = chat(tok, [{"role": "user", "content": COMPARISON.format(prompt=request, comparison=POLITE.comparison, first=a, second=b)}])
    assert len(tok(full, add_special_tokens=False)["input_ids"]) > 768  # cutting this from the left would lose the request and (A)
    text = comparison_prompt(tok, request, a, b, POLITE, max_tokens=768)
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    assert 700 < n <= 768
    assert "Consider this request to an AI assistant:\n\nplease summarize the following conversation" in text
    assert "(A) you can cool your house" in text and f"(B) {b}\n\n" in text  # the short response is whole
    assert text.endswith("Answer with the letter A or B only.<|im_end|>\n<|im_start|>assistant\n")
    assert text.count(" …") == 2  # the request and response A were cut, each keeping its start
    # the judge reads exactly that text: nothing more is cut when it is encoded
    p = prob_first_better(model, tok, [text], 768)
    with torch.no_grad():
        logits = model(input_ids=tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]).logits[0, -1]
    a_id, b_id = tok("A", add_special_tokens=False)["input_ids"][0], tok("B", add_special_tokens=False)["input_ids"][0]
    assert abs(p.item() - torch.softmax(logits[[a_id, b_id]], -1)[0].item()) < 1e-5


def test_long_conversations_keep_the_request_and_the_instruction(tiny_tok):
    answer = "you can cool your house with air conditioning. " * 80
    critique = "there is nothing you can do about hot houses. " * 80
    msgs = revision_messages("my house is too hot", answer, critique, POLITE)
    text = format_conversation(tiny_tok, msgs, 400)
    assert len(tiny_tok(text, add_special_tokens=False)["input_ids"]) <= 400
    assert text.startswith("<|im_start|>user\nmy house is too hot<|im_end|>")
    assert f"{POLITE.revision}<|im_end|>\n<|im_start|>assistant\n" in text and text.count(" …") == 2
