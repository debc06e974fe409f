"""A user's data as a whole: admin export and deletion remove everything; replies never block the server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import torch
from personal_helpers import ADMIN, make_adapter
from sqlalchemy import func, select
from test_chat_api import bearer, new_turn

from rlhf.feedback import ServeConfig, import_generations, store
from rlhf.feedback.tables import Assignment, ChatConversation, ChatTurn, Item, Judgement, Labeler, PersonalAdapter
from rlhf.personalize.data import UserFeedback
from rlhf.personalize.layout import PersonalDir
from rlhf.personalize.reward import UserPart, save_user_part
from rlhf.personalize.serving import serve_in_background
from rlhf.types import Generation


def count(db, table, *where) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(table).where(*where))


def test_export_then_delete_removes_rows_reward_part_and_adapter(client, tokens, db, chat, chat_cfg, tiny_lm_dir):
    pdir = PersonalDir.at(chat_cfg.personal_dir)
    import_generations(db, [Generation("hot", "My house is too hot", ("fan", "aircon"))], "hot", labelers_per_item=2)
    with db.session() as s:  # both label the shared item
        for name in ("ann", "bob"):
            lab = store.get_labeler(s, name)
            a = store.next_assignment(s, lab, store.get_project(s, "hot"))
            ids = [c.id for c in a.item.completions]
            store.submit_judgement(s, lab, a.id, store.JudgementInput(ranking=[ids[1], ids[0]]))
    for token in (tokens["ann"], tokens["bob"]):
        t = new_turn(client, token)
        assert client.post(f"/api/chat/turns/{t['id']}/feedback", json={"choice": "A"}, headers=bearer(token)).status_code == 201
    for lid, key in ((1, "u1"), (2, "u2")):  # ann is 1, bob is 2: a reward part and a published adapter each
        save_user_part(pdir.reward, UserPart(lid, "x", torch.tensor([0.5, -0.5]), pairs=1))
        ref = make_adapter(tiny_lm_dir, pdir.root, key, 1, seed=lid)
        with db.session() as s:
            store.publish_adapter(s, lid, 1, ref.path, "none", 0, 1)
    assert new_turn(client, tokens["ann"])["policy"] == "user"
    assert chat.loaded_adapters() == ["u1_v1"]

    data = client.get("/api/admin/users/1/export", headers=bearer(ADMIN)).json()
    assert data["user"]["name"] == "ann" and len(data["conversations"]) == 2
    assert data["conversations"][0]["turns"][0]["feedback"] == {"choice": "A"}
    assert [(x["project"], x["ranking"]) for x in data["labeling"]] == [("hot", [[1], [0]])]
    assert data["adapter"]["version"] == 1 and data["reward_part"]["weights"]["w"] == [0.5, -0.5]
    assert {"reward/users/u1.safetensors", "adapters/u1/v0001/adapter/adapter_model.safetensors"} <= set(data["files"])

    gone = client.delete("/api/admin/users/1", headers=bearer(ADMIN))
    assert gone.status_code == 200
    body = gone.json()
    assert body["user"] == "ann" and body["removed"] == {
        "chat_turns": 2, "conversations": 2, "judgements": 2, "assignments": 3, "adapters": 1}
    assert set(data["files"]) == set(body["files"])
    # nothing of ann is left: rows, reward part, adapter files, account; bob is untouched
    assert count(db, Labeler, Labeler.name == "ann") == 0
    assert count(db, ChatTurn, ChatTurn.labeler_id == 1) == count(db, ChatConversation, ChatConversation.labeler_id == 1) == 0
    assert count(db, Assignment, Assignment.labeler_id == 1) == count(db, PersonalAdapter, PersonalAdapter.labeler_id == 1) == 0
    assert count(db, Judgement) == 2 and count(db, ChatTurn) == 1  # bob's labeling + chat judgements
    with db.session() as s:
        assert s.scalar(select(Item.n_assigned).where(Item.external_id == "hot")) == 1  # ann's slot is free again
        assert {i.external_id for i in s.scalars(select(Item))} == {"hot", store.get_turn(s, store.get_labeler(s, "bob"), 2).item.external_id}
    assert pdir.user_files(1) == [] and not pdir.adapters(1).exists()
    assert len(pdir.user_files(2)) > 2
    assert client.get("/api/chat/me", headers=bearer(tokens["ann"])).status_code == 401
    assert client.get("/api/admin/users/2/export", headers=bearer(ADMIN)).json()["adapter"]["version"] == 1
    new_turn(client, tokens["bob"])  # the worker handles the forget() queued by the deletion first
    assert chat.loaded_adapters() == ["u2_v1"]
    assert client.delete("/api/admin/users/1", headers=bearer(ADMIN)).status_code == 404


def test_a_reply_being_generated_does_not_block_other_requests(db, tokens, chat, monkeypatch):
    gate, run = threading.Event(), chat._run
    monkeypatch.setattr(chat, "_run", lambda jobs: (gate.wait(60), run(jobs)))
    with serve_in_background(chat, ServeConfig(port=0, admin_token=ADMIN), db) as url:
        ann, bob = bearer(tokens["ann"]), bearer(tokens["bob"])
        conv = httpx.post(url + "/api/chat/conversations", json={}, headers=ann).json()["id"]
        out: list[httpx.Response] = []
        t = threading.Thread(target=lambda: out.append(httpx.post(
            f"{url}/api/chat/conversations/{conv}/turns", json={"message": "hello"}, headers=ann, timeout=120)))
        t.start()
        deadline = time.monotonic() + 30
        while chat._pending == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert chat._pending == 1  # the reply is waiting for the model ...
        for _ in range(3):  # ... while the server answers everyone else, reading and writing the store
            assert httpx.get(url + "/api/me", headers=bob, timeout=10).status_code == 200
            assert httpx.post(url + "/api/chat/conversations", json={}, headers=bob, timeout=10).status_code == 201
        assert t.is_alive() and not out
        gate.set()
        t.join(60)
    assert out[0].status_code == 201 and len(out[0].json()["candidates"]) == 2


def test_user_data_cli(db, tokens, tmp_path, client, chat_cfg):
    from typer.testing import CliRunner

    from rlhf.cli import app

    new_turn(client, tokens["bob"])
    pdir = PersonalDir.at(chat_cfg.personal_dir)
    save_user_part(pdir.reward, UserPart(2, "bob", torch.zeros(2)))
    args = ["--db", db.url.removeprefix("sqlite:///"), "--out", str(pdir.root)]
    runner = CliRunner()
    status = runner.invoke(app, ["personal", "status", *args])
    assert status.exit_code == 0 and "bob" in status.output
    exported = runner.invoke(app, ["personal", "export", "bob", "--output", str(tmp_path / "bob.json"), *args])
    assert exported.exit_code == 0 and "bob" in (tmp_path / "bob.json").read_text()
    deleted = runner.invoke(app, ["personal", "delete", "bob", "--yes", *args])
    assert deleted.exit_code == 0 and "Deleted bob" in deleted.output
    assert not pdir.reward_part(2)[0].exists() and count(db, Labeler, Labeler.name == "bob") == 0
    assert runner.invoke(app, ["personal", "delete", "bob", "--yes", *args]).exit_code == 2
    assert UserFeedback(1, "x").key == "u1"
