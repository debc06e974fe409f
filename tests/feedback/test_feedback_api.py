"""HTTP API and pages through FastAPI's TestClient: auth, validation, idempotency, admin actions."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from feedback_helpers import ADMIN, AIRCON, HOT_PROMPT, NOT_HOT, NOTHING

from rlhf.feedback import ServeConfig, add_labelers, store
from rlhf.feedback.web import create_app


@pytest.fixture()
def client(hot_db):
    app = create_app(ServeConfig(admin_token=ADMIN), hot_db)
    with TestClient(app, follow_redirects=False) as c:
        yield c


@pytest.fixture()
def tokens(hot_db):
    return add_labelers(hot_db, ["ann", "bob", "cat"])


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def claim(client, token: str) -> tuple[int, dict[str, int]]:
    r = client.get("/api/projects/1/next", headers=bearer(token))
    assert r.status_code == 200, r.text
    task = r.json()["assignment"]
    return task["assignment_id"], {c["text"]: c["id"] for c in task["item"]["completions"]}


def submit(client, aid: int, token: str, **kw):
    return client.post(f"/api/assignments/{aid}/judgement", headers=bearer(token), **kw)


def judgements(db) -> int:
    with db.session() as s:
        return store.count_rows(s)["judgements"]


def test_labeler_loop_and_idempotent_retry(client, tokens, hot_db):
    aid, ids = claim(client, tokens["ann"])
    assert claim(client, tokens["ann"])[0] == aid  # the open assignment comes back, nothing new claimed
    body = {"ranking": [ids[AIRCON], [ids[NOTHING], ids[NOT_HOT]]], "seconds": 4.2}
    first = client.post(f"/api/assignments/{aid}/judgement", json=body, headers=bearer(tokens["ann"]))
    retry = client.post(f"/api/assignments/{aid}/judgement", json=body, headers=bearer(tokens["ann"]))
    assert (first.status_code, first.json()["duplicate"]) == (201, False)
    assert (retry.status_code, retry.json()["duplicate"]) == (200, True)
    assert retry.json()["judgement_id"] == first.json()["judgement_id"]
    other = submit(client, aid, tokens["ann"], json={"ranking": list(ids.values())})
    assert other.status_code == 409 and "different judgement" in other.json()["detail"]
    nxt = client.get("/api/projects/1/next", headers=bearer(tokens["ann"])).json()
    assert nxt == {"assignment": None, "progress": {"done": 1, "remaining": 0}}
    assert judgements(hot_db) == 1
    with hot_db.session() as s:
        row = store.project_judgements(s, store.get_project(s, 1))[0]
    assert row.ranking == ((1,), (0, 2)) and row.labeler == "ann"


def test_auth_required_everywhere(client, tokens):
    assert client.get("/api/me").status_code == 401
    assert client.get("/api/me", headers=bearer("rlhf_wrong")).status_code == 401
    assert client.get("/api/me", headers=bearer(tokens["ann"])).json()["name"] == "ann"
    assert client.get("/api/projects/1/next").status_code == 401
    r = client.get("/projects/1")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    for path in ("/api/admin/projects", "/api/admin/projects/1/agreement", "/api/admin/labelers"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=bearer(tokens["ann"])).status_code == 401  # a labeler is not an admin
        assert client.get(path, headers=bearer(ADMIN)).status_code == 200
    assert client.post("/api/admin/labelers", json={"name": "eve"}, headers=bearer(tokens["ann"])).status_code == 401
    assert client.get("/admin").headers["location"] == "/admin/login"
    assert client.post("/admin/login", data={"token": "nope"}).status_code == 401


def test_labeler_cannot_see_or_write_another_labelers_assignment(client, tokens, hot_db):
    aid, ids = claim(client, tokens["ann"])
    assert client.get(f"/api/assignments/{aid}", headers=bearer(tokens["bob"])).status_code == 404
    r = submit(client, aid, tokens["bob"], json={"ranking": list(ids.values())})
    assert r.status_code == 404
    assert client.get(f"/api/assignments/{aid}", headers=bearer(tokens["ann"])).json()["item"]["prompt"] == HOT_PROMPT
    assert judgements(hot_db) == 0


@pytest.mark.parametrize("make_body, message", [
    (lambda ids: {"ranking": ids[:2]}, "leaves out completion(s)"),
    (lambda ids: {"ranking": ids + [ids[0]]}, "more than once"),
    (lambda ids: {"ranking": ids[:2] + [123456]}, "not in this item"),
    (lambda ids: {"ranking": [ids[0], [], ids[1], ids[2]]}, "tier 2 is empty"),
    (lambda ids: {}, "exactly one of ranking, thumbs or flag_reason"),
    (lambda ids: {"ranking": ids, "flag_reason": "x"}, "exactly one of ranking, thumbs or flag_reason"),
    (lambda ids: {"ranking": "first"}, "ranking"),
    (lambda ids: {"ranking": ids, "colour": "red"}, "colour"),
    (lambda ids: {"flag_reason": "   "}, "blank"),
    (lambda ids: {"thumbs": {str(i): "up" for i in ids}}, "collects rankings, not thumbs"),
    (lambda ids: {"ranking": ids, "seconds": -1}, "seconds"),
])
def test_invalid_submissions_get_422_with_a_clear_message(client, tokens, hot_db, make_body, message):
    aid, by_text = claim(client, tokens["ann"])
    r = submit(client, aid, tokens["ann"], json=make_body(list(by_text.values())))
    assert r.status_code == 422
    assert message in r.json()["detail"]
    assert judgements(hot_db) == 0


def test_malformed_json_is_422(client, tokens):
    aid, _ = claim(client, tokens["ann"])
    r = client.post(
        f"/api/assignments/{aid}/judgement", content=b"{not json",
        headers=bearer(tokens["ann"]) | {"Content-Type": "application/json"},
    )
    assert r.status_code == 422


def test_flag_is_stored_with_reason(client, tokens, hot_db):
    aid, _ = claim(client, tokens["bob"])
    r = submit(client, aid, tokens["bob"], json={"flag_reason": "prompt is unclear"})
    assert r.status_code == 201 and r.json()["kind"] == "flag"
    with hot_db.session() as s:
        row = store.project_judgements(s, store.get_project(s, 1))[0]
    assert (row.kind, row.flag_reason, row.ranking) == ("flag", "prompt is unclear", None)


def test_login_page_and_labeling_page(client, tokens):
    assert client.post("/login", data={"token": "rlhf_bad"}).status_code == 401
    r = client.post("/login", data={"token": tokens["cat"]})
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "hot" in client.get("/").text
    page = client.get("/projects/1")
    assert page.status_code == 200
    for text in (HOT_PROMPT, AIRCON, NOTHING, NOT_HOT, "harmless and helpful", "<h1>Rank</h1>", "Flag as unusable"):
        assert text in page.text
    assert "<strong>first</strong>" in client.get("/projects/1/instructions").text
    assert client.post("/logout").headers["location"] == "/login"


def test_admin_api_creates_labelers_and_excludes(client, tokens, hot_db):
    r = client.post("/api/admin/labelers", json={"name": "dan"}, headers=bearer(ADMIN))
    assert r.status_code == 201
    assert client.get("/api/me", headers=bearer(r.json()["token"])).json()["name"] == "dan"
    assert client.post("/api/admin/labelers", json={"name": "dan"}, headers=bearer(ADMIN)).status_code == 409
    assert client.post("/api/admin/labelers", json={"name": " dan"}, headers=bearer(ADMIN)).status_code == 422
    assert client.post("/api/admin/labelers", json={"name": "d\x07n"}, headers=bearer(ADMIN)).status_code == 422
    bob = r.json()["id"] - 2
    r = client.put(f"/api/admin/projects/1/exclusions/{bob}", json={"reason": "test"}, headers=bearer(ADMIN))
    assert r.status_code == 204
    with hot_db.session() as s:
        assert store.excluded_labelers(s, store.get_project(s, 1)) == {"bob": "test"}
    assert client.delete(f"/api/admin/projects/1/exclusions/{bob}", headers=bearer(ADMIN)).status_code == 204
    assert client.put("/api/admin/projects/1/exclusions/999", headers=bearer(ADMIN)).status_code == 404
    with hot_db.session() as s:
        assert store.excluded_labelers(s, store.get_project(s, 1)) == {}


def test_admin_pages(client, tokens, hot_db):
    assert client.post("/admin/login", data={"token": ADMIN}).headers["location"] == "/admin"
    index = client.get("/admin")
    assert index.status_code == 200 and "hot" in index.text and "ann" in index.text
    created = client.post("/admin/labelers", data={"name": "eve"})
    assert "Labeler <strong>eve</strong> created" in created.text and "rlhf_" in created.text
    aid, ids = claim(client, tokens["ann"])
    submit(client, aid, tokens["ann"], json={"ranking": list(ids.values())})
    page = client.get("/admin/projects/1")
    assert page.status_code == 200 and "Krippendorff" in page.text and 'data-labeler="ann"' in page.text
    r = client.post("/admin/projects/1/labelers/1/exclusion", data={"excluded": "true"})
    assert r.status_code == 303
    with hot_db.session() as s:
        assert list(store.excluded_labelers(s, store.get_project(s, 1))) == ["ann"]
    assert "Include again" in client.get("/admin/projects/1").text


def test_pages_escape_untrusted_text(hot_db, tokens):
    from rlhf.feedback import import_generations
    from rlhf.types import Generation

    import_generations(hot_db, [Generation("x", "<script>alert(1)</script>", ("<b>a</b>", "b"))], "xss")
    app = create_app(ServeConfig(admin_token=ADMIN), hot_db)
    with TestClient(app) as c:
        c.cookies.set("rlhf_token", tokens["ann"])
        page = c.get("/projects/2").text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>a</b>" not in page
