"""Every prompt Constitutional AI sends, built as chat messages and formatted by the model's chat template.

Long inputs are cut part by part (the request, each response, each earlier turn), longest first,
so that a conversation or an A/B comparison always keeps every part's start: cutting the formatted
text from the left would drop the request and response A first.
"""

from __future__ import annotations

from typing import Sequence

from rlhf.constitutional.constitution import Example, Principle
from rlhf.generation import format_messages

Message = dict[str, str]
ELLIPSIS = " …"


def water_level(lengths: Sequence[int], budget: int) -> int:
    """The largest cap c with sum(min(len, c)) <= budget: short parts stay whole, long ones share the rest."""
    if sum(lengths) <= budget:
        return max(lengths, default=0)
    lo, hi = 0, max(lengths)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(n, mid) for n in lengths) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def fit_parts(tok, parts: Sequence[str], budget: int) -> list[str]:
    """Cut `parts` (each keeps its beginning, marked with an ellipsis) so their tokens sum to <= budget."""
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in parts]
    lengths = [len(x) for x in ids]
    if sum(lengths) <= budget:
        return list(parts)
    mark = len(tok(ELLIPSIS, add_special_tokens=False)["input_ids"])
    cap = water_level(lengths, max(0, budget - mark * len(parts)))
    return [p if len(x) <= cap else tok.decode(x[:cap]).rstrip() + ELLIPSIS for p, x in zip(parts, ids)]


def _n_tokens(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=not getattr(tok, "chat_template", None))["input_ids"])


def fit_messages(tok, messages: Sequence[Message], max_tokens: int, keep: Sequence[int] = ()) -> str:
    """The formatted conversation in at most `max_tokens` tokens, cutting message contents (not the
    messages at positions `keep`, e.g. the instruction) rather than the conversation's start."""
    messages = [dict(m) for m in messages]
    overhead = _n_tokens(tok, format_messages(tok, [m | {"content": ""} for m in messages]))
    fixed = sum(_n_tokens(tok, messages[i]["content"]) for i in keep)
    cut = [i for i in range(len(messages)) if i not in set(keep)]
    budget = max_tokens - overhead - fixed
    if budget < 8 * len(cut):
        raise ValueError(f"max_context_tokens={max_tokens} leaves no room for the conversation (template and "
                         f"instructions take {overhead + fixed} tokens); raise it")
    for _ in range(4):  # re-tokenising a cut text can add a token or two at the seams
        fitted = fit_parts(tok, [messages[i]["content"] for i in cut], budget)
        text = format_messages(tok, [m | ({"content": fitted[cut.index(i)]} if i in cut else {}) for i, m in enumerate(messages)])
        excess = _n_tokens(tok, text) - max_tokens
        if excess <= 0:
            return text
        budget -= excess + 2
    raise ValueError(f"cannot fit the conversation into max_context_tokens={max_tokens}")


# --------------------------------------------------------------------------- critique and revision


def few_shot_turns(examples: Sequence[Example], principle: Principle) -> list[Message]:
    """Worked examples as earlier turns: request, answer, critique request, critique, revision request, revision."""
    turns: list[Message] = []
    for ex in examples:
        turns += [
            {"role": "user", "content": ex.request}, {"role": "assistant", "content": ex.response},
            {"role": "user", "content": principle.critique}, {"role": "assistant", "content": ex.critique},
            {"role": "user", "content": principle.revision}, {"role": "assistant", "content": ex.revision},
        ]
    return turns


def critique_messages(prompt: str, answer: str, principle: Principle, examples: Sequence[Example] = ()) -> list[Message]:
    """The conversation whose next assistant turn is the critique of `answer`."""
    return few_shot_turns(examples, principle) + [
        {"role": "user", "content": prompt}, {"role": "assistant", "content": answer},
        {"role": "user", "content": principle.critique},
    ]


def revision_messages(prompt: str, answer: str, critique: str, principle: Principle, examples: Sequence[Example] = ()) -> list[Message]:
    """The conversation whose next assistant turn is the revision of `answer`."""
    return critique_messages(prompt, answer, principle, examples) + [
        {"role": "assistant", "content": critique}, {"role": "user", "content": principle.revision},
    ]


def format_conversation(tok, messages: Sequence[Message], max_tokens: int) -> str:
    """A critique or revision conversation, instructions (the last user turn) never cut."""
    return fit_messages(tok, messages, max_tokens, keep=(len(messages) - 1,))


# --------------------------------------------------------------------------- A/B comparison (AI feedback)

COMPARISON = (
    "Consider this request to an AI assistant:\n\n{prompt}\n\n"
    "Which response is {comparison}?\n\n(A) {first}\n\n(B) {second}\n\n"
    "Answer with the letter A or B only."
)


def comparison_messages(prompt: str, first: str, second: str, principle: Principle) -> list[Message]:
    return [{"role": "user", "content": COMPARISON.format(prompt=prompt, comparison=principle.comparison, first=first, second=second)}]


def _format_comparison(tok, messages: list[Message]) -> str:
    # A model without a chat template (a base LM) is led straight to the letter.
    if not getattr(tok, "chat_template", None):
        return messages[0]["content"] + "\n\nAnswer: ("
    return format_messages(tok, messages)


def comparison_prompt(tok, prompt: str, first: str, second: str, principle: Principle, max_tokens: int = 768) -> str:
    """The A/B question in the judge's chat template, in at most `max_tokens` tokens.

    The request and both responses are cut separately (longest first), never the question around them.
    """
    overhead = _n_tokens(tok, _format_comparison(tok, comparison_messages("", "", "", principle)))
    budget = max_tokens - overhead
    if budget < 24:
        raise ValueError(f"max_context_tokens={max_tokens} leaves no room for the comparison (its frame takes {overhead} tokens)")
    for _ in range(4):
        p, a, b = fit_parts(tok, [prompt, first, second], budget)
        text = _format_comparison(tok, comparison_messages(p, a, b, principle))
        excess = _n_tokens(tok, text) - max_tokens
        if excess <= 0:
            return text
        budget -= excess + 2
    raise ValueError(f"cannot fit the comparison into max_context_tokens={max_tokens}")
