"""The chat API over the real app (TestClient): choices stored as judgements, idempotency, validation, isolation."""

from __future__ import annotations

from pathlib import Path

import pytest
from personal_helpers import ADMIN, make_adapter

from rlhf.feedback import store
from rlhf.feedback.tables import ChatTurn, Item, Judgement
from rlhf.personalize.serving import ServiceBusy


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def new_turn(client, token: str, message: str = "my house is too hot", compare: bool = True, conv: int | None = None,
             **extra):
    if conv is None:
        conv = client.post("/api/chat/conversations", json={"title": message}, headers=bearer(token)).json()["id"]
    r = client.post(f"/api/chat/conversations/{conv}/turns", json={"message": message, "compare": compare, **extra},
                    headers=bearer(token))
    assert r.status_code == 201, r.text
    return r.json()


def rows(db, table) -> int:
    from sqlalchemy import func, select

    with db.session() as s:
        return s.scalar(select(func.count()).select_from(table))


def test_chat_choices_are_judgements_in_the_store(client, tokens, db):
    ann = bearer(tokens["ann"])
    turn = new_turn(client, tokens["ann"])
    assert [c["label"] for c in turn["candidates"]] == ["A", "B"] and turn["policy"] == "base"
    assert turn["feedback"] is None and turn["usage"]["tokens"][0] <= 12
    first = client.post(f"/api/chat/turns/{turn['id']}/feedback", json={"choice": "B", "seconds": 3}, headers=ann)
    again = client.post(f"/api/chat/turns/{turn['id']}/feedback", json={"choice": "B"}, headers=ann)
    other = client.post(f"/api/chat/turns/{turn['id']}/feedback", json={"choice": "A"}, headers=ann)
    assert (first.status_code, first.json()["duplicate"], first.json()["feedback"]) == (201, False, {"choice": "B"})
    assert (again.status_code, again.json()["duplicate"]) == (200, True)
    assert other.status_code == 409
    with db.session() as s:
        fb = store.chat_feedback(s)
        assert len(fb) == 1 and fb[0].labeler == "ann" and fb[0].ranking == ((1,), (0,))
        assert fb[0].completions == tuple(c["text"] for c in turn["candidates"])
        p = store.get_project(s, s.get(Item, s.get(ChatTurn, turn["id"]).item_id).project_id)
        assert (p.mode, p.labelers_per_item) == ("rank", 1)

    # the conversation goes on from the chosen reply (B); a single reply takes thumbs
    single = new_turn(client, tokens["ann"], "and at night?", compare=False, conv=turn["conversation_id"])
    assert len(single["candidates"]) == 1 and single["position"] == 1
    assert client.post(f"/api/chat/turns/{single['id']}/feedback", json={"thumbs": "down"}, headers=ann).status_code == 201
    with db.session() as s:
        fb = store.chat_feedback(s)
        assert fb[1].thumbs == (-1,) and fb[1].context == (("user", "my house is too hot"),
                                                          ("assistant", turn["candidates"][1]["text"]))
    conv = client.get(f"/api/chat/conversations/{turn['conversation_id']}", headers=ann).json()
    assert [t["feedback"] for t in conv["turn_list"]] == [{"choice": "B"}, {"thumbs": "down"}]
    assert client.get("/api/projects", headers=ann).json() == []  # chat projects are not labeling work
    assert client.get("/api/chat/me", headers=ann).json() | {"id": 0} == {
        "id": 0, "name": "ann", "policy": "base", "adapter_version": None, "max_new_tokens": 12, "choices": 2}


def test_retried_turn_is_stored_once_and_bad_input_is_refused(client, tokens, db):
    ann = bearer(tokens["ann"])
    first = new_turn(client, tokens["ann"], request_id="req-1")
    retry = client.post(f"/api/chat/conversations/{first['conversation_id']}/turns",
                        json={"message": "my house is too hot", "request_id": "req-1"}, headers=ann)
    assert retry.status_code == 200 and retry.json()["id"] == first["id"]
    assert rows(db, ChatTurn) == 1
    url = f"/api/chat/conversations/{first['conversation_id']}/turns"
    for body, where in [({"message": "  "}, "message"), ({"message": "hi", "tone": "x"}, "tone"),
                        ({"message": "hi", "max_new_tokens": 13}, "max_new_tokens"), ({}, "message")]:
        r = client.post(url, json=body, headers=ann)
        assert r.status_code == 422 and where in r.json()["detail"], r.text
    fb = f"/api/chat/turns/{first['id']}/feedback"
    for body in ({"thumbs": "up"}, {"choice": "A", "thumbs": "up"}, {}, {"choice": "C"}):
        assert client.post(fb, json=body, headers=ann).status_code == 422
    single = new_turn(client, tokens["ann"], compare=False, conv=first["conversation_id"])
    assert client.post(f"/api/chat/turns/{single['id']}/feedback", json={"choice": "A"}, headers=ann).status_code == 422
    assert rows(db, Judgement) == 0


def test_every_chat_route_keeps_users_apart(client, tokens, db, chat, chat_cfg, tiny_lm_dir):
    ann, bob = bearer(tokens["ann"]), bearer(tokens["bob"])
    ref = make_adapter(tiny_lm_dir, Path(chat_cfg.personal_dir), "u1", 1, seed=1)  # ann is labeler 1
    with db.session() as s:
        store.publish_adapter(s, 1, 1, ref.path, "none", 0, 0)
    turn = new_turn(client, tokens["ann"])
    assert (turn["policy"], turn["adapter_version"]) == ("user", 1)
    conv, tid = turn["conversation_id"], turn["id"]
    bobs = new_turn(client, tokens["bob"])
    assert (bobs["policy"], bobs["adapter_version"]) == ("base", None)  # bob never gets ann's adapter
    assert bobs["candidates"][0]["text"] != turn["candidates"][0]["text"]

    # another user's conversation, turn or assignment: 404, exactly as if it did not exist
    assert client.get(f"/api/chat/conversations/{conv}", headers=bob).status_code == 404
    assert client.post(f"/api/chat/conversations/{conv}/turns", json={"message": "hi"}, headers=bob).status_code == 404
    assert client.post(f"/api/chat/turns/{tid}/feedback", json={"choice": "A"}, headers=bob).status_code == 404
    with db.session() as s:
        aid = s.get(ChatTurn, tid).assignment_id
    assert client.get(f"/api/assignments/{aid}", headers=bob).status_code == 404
    assert client.post(f"/api/assignments/{aid}/judgement", json={"ranking": [1, 2]}, headers=bob).status_code == 404
    assert [c["id"] for c in client.get("/api/chat/conversations", headers=bob).json()] == [bobs["conversation_id"]]
    assert client.get("/api/chat/me", headers=bob).json()["policy"] == "base"
    assert rows(db, Judgement) == 0

    # no token: 401 on every route; a labeler's token is not an admin's
    for method, path, body in [("get", "/api/chat/me", None), ("get", "/api/chat/conversations", None),
                               ("post", "/api/chat/conversations", {}), ("get", f"/api/chat/conversations/{conv}", None),
                               ("post", f"/api/chat/conversations/{conv}/turns", {"message": "hi"}),
                               ("post", f"/api/chat/turns/{tid}/feedback", {"choice": "A"})]:
        assert getattr(client, method)(path, **({"json": body} if body is not None else {})).status_code == 401, path
    for method, path in [("get", "/api/admin/users/1/export"), ("delete", "/api/admin/users/1")]:
        assert getattr(client, method)(path).status_code == 401
        assert getattr(client, method)(path, headers=ann).status_code == 401
    assert client.get("/api/admin/users/99/export", headers=bearer(ADMIN)).status_code == 404
    page = client.get("/chat")
    assert page.status_code == 303 and page.headers["location"] == "/login"
    assert client.get("/chat", headers=ann).status_code == 200


def test_busy_model_answers_503(client, tokens, chat, monkeypatch):
    def busy(request):
        raise ServiceBusy("64 requests are waiting for the model")

    monkeypatch.setattr(chat, "submit", busy)
    conv = client.post("/api/chat/conversations", json={}, headers=bearer(tokens["ann"])).json()["id"]
    r = client.post(f"/api/chat/conversations/{conv}/turns", json={"message": "hi"}, headers=bearer(tokens["ann"]))
    assert r.status_code == 503 and r.headers["retry-after"] == "5"


def test_openapi_declares_every_chat_status(client):
    spec = client.get("/openapi.json").json()["paths"]
    turns = spec["/api/chat/conversations/{conversation_id}/turns"]["post"]["responses"]
    assert set(turns) == {"200", "201", "400", "401", "404", "409", "422", "503"}
    feedback = spec["/api/chat/turns/{turn_id}/feedback"]["post"]["responses"]
    assert set(feedback) == {"200", "201", "400", "401", "404", "409", "422", "503"}
    assert set(spec["/api/admin/users/{labeler_id}"]["delete"]["responses"]) == {"200", "401", "404", "422", "503"}
    assert turns["404"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorOut"}
