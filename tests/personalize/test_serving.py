"""One base model, users' adapters switched per request and mixed in one batch, with an LRU limit."""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future

import pytest
from personal_helpers import make_adapter

from rlhf.generation import SamplingConfig, decode_responses, encode_texts, eos_ids, format_messages, sample
from rlhf.models.registry import load_causal_lm
from rlhf.personalize.serving import AdapterRef, ChatService, ReplyRequest, _Job

MESSAGES = ({"role": "user", "content": "my house is too hot"},)


def expected(lm_dir, personal_dir, ref: AdapterRef | None, n: int = 12) -> list[str]:
    """Greedy reply of a fresh base model with only this adapter attached (or none)."""
    from peft import PeftModel

    model, tok = load_causal_lm(lm_dir)
    if ref is not None:
        model = PeftModel.from_pretrained(model, str(personal_dir / ref.path)).eval()
    ids, mask = encode_texts(tok, [format_messages(tok, list(MESSAGES))], 96)
    out = sample(model, ids, mask, SamplingConfig(n, 0.0), eos_ids(tok, load_causal_lm(lm_dir)[0]), tok.pad_token_id)
    return decode_responses(tok, out)


@pytest.fixture()
def users(chat_cfg, tiny_lm_dir):
    from pathlib import Path

    pdir = Path(chat_cfg.personal_dir)
    return {k: make_adapter(tiny_lm_dir, pdir, k, 1, seed) for k, seed in (("u1", 1), ("u2", 2))}


def test_each_request_is_answered_by_its_users_adapter(chat, chat_cfg, tiny_lm_dir, users):
    from pathlib import Path

    pdir = Path(chat_cfg.personal_dir)
    want = {k: expected(tiny_lm_dir, pdir, ref) for k, ref in users.items()} | {"base": expected(tiny_lm_dir, pdir, None)}
    assert len({tuple(v) for v in want.values()}) == 3  # the adapters really change the replies

    ask = lambda ref: chat.reply(ReplyRequest(MESSAGES, 1, 12, ref)).texts  # noqa: E731
    for key in ("u1", "u2", "u1", None, "u2"):  # switching back and forth
        assert ask(users.get(key)) == want[key or "base"]
    assert chat.loaded_adapters() == ["u1_v1", "u2_v1"]

    # one batch with rows of both users and of the base: each row still gets its own adapter
    jobs = [_Job(ReplyRequest(MESSAGES, n, 12, users.get(k)), Future()) for k, n in (("u2", 2), (None, 1), ("u1", 1))]
    chat._run(jobs)
    assert [j.future.result().texts for j in jobs] == [want["u2"] * 2, want["base"], want["u1"]]
    assert jobs[0].future.result().batch_rows == 4


def test_lru_limit_and_new_versions(chat_cfg, tiny_lm_dir, users):
    from pathlib import Path

    pdir = Path(chat_cfg.personal_dir)
    svc = ChatService(dataclasses.replace(chat_cfg, max_loaded_adapters=1))
    try:
        first = svc.reply(ReplyRequest(MESSAGES, 1, 12, users["u1"])).texts
        svc.reply(ReplyRequest(MESSAGES, 1, 12, users["u2"]))
        assert svc.loaded_adapters() == ["u2_v1"]  # u1 evicted
        assert svc.reply(ReplyRequest(MESSAGES, 1, 12, users["u1"])).texts == first  # reloaded from disk, same replies
        assert svc.loaded_adapters() == ["u1_v1"]
        v2 = make_adapter(tiny_lm_dir, pdir, "u1", 2, seed=7)
        assert svc.reply(ReplyRequest(MESSAGES, 1, 12, v2)).texts == expected(tiny_lm_dir, pdir, v2)
        assert svc.loaded_adapters() == ["u1_v2"]  # the old version is gone from memory
        svc.forget("u1")
        svc.reply(ReplyRequest(MESSAGES, 1, 12, None))
        assert svc.loaded_adapters() == []
    finally:
        svc.close()


def test_policy_falls_back_when_the_adapter_does_not_fit(chat, users):
    assert chat.policy_for(None) == ("base", None)
    assert chat.policy_for(users["u1"]) == ("user", users["u1"])
    other_shared = dataclasses.replace(users["u1"], shared="0123456789abcdef")  # trained on another shared adapter
    assert chat.policy_for(other_shared) == ("base", None)
    missing = dataclasses.replace(users["u1"], path="adapters/u1/v0009/adapter")
    assert chat.policy_for(missing) == ("base", None)
    with pytest.raises(ValueError, match="max_new_tokens"):
        chat.submit(ReplyRequest(MESSAGES, 1, 13, None))  # over the server's cap of 12


def test_a_broken_adapter_falls_back_without_failing_the_batch(chat, chat_cfg, tiny_lm_dir, users):
    from pathlib import Path

    pdir = Path(chat_cfg.personal_dir)
    (pdir / users["u2"].path / "adapter_model.safetensors").write_bytes(b"not weights")
    jobs = [_Job(ReplyRequest(MESSAGES, 1, 12, users[k]), Future()) for k in ("u1", "u2")]
    chat._run(jobs)
    ok, broken = (j.future.result() for j in jobs)
    assert ok.texts == expected(tiny_lm_dir, pdir, users["u1"]) and not ok.fallback
    assert broken.fallback and broken.texts == expected(tiny_lm_dir, pdir, None)
    assert chat.loaded_adapters() == ["u1_v1"]
