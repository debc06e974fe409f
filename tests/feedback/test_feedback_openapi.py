"""The OpenAPI spec is a contract: schemathesis (every check, warnings fatal) against a live server, as a labeler and
as admin; and the route-error convention (web/errors.py) checked on the spec itself."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest
from fastapi.testclient import TestClient
from feedback_helpers import ADMIN, HOT, generations, serve_process

from rlhf.feedback import ServeConfig, add_labelers, import_generations, open_database
from rlhf.feedback.web import create_app

MAX_EXAMPLES = 25  # per operation and phase; the two runs take about 30 s together on 2 cores

# schemathesis.toml for the runs below.
CONFIG = """
[warnings]
fail-on = true  # e.g. every answer a 401 (the token was never used) fails the run too

# A ranking the schema allows can still fail to be a judgement of *this* item (ids of another item, a ranking
# for a thumbs project): the server answers 422, as documented. The schema cannot know an item's ids or mode.
[[operations]]
include-name = "POST /api/assignments/{assignment_id}/judgement"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A real server on loopback over a store with a rank and a thumbs project and two labelers."""
    path = tmp_path_factory.mktemp("openapi") / "feedback.db"
    db = open_database(path)
    import_generations(db, [HOT, *generations(6)], "hot", labelers_per_item=2)
    import_generations(db, generations(3), "votes", mode="thumbs", labelers_per_item=2)
    tokens = add_labelers(db, ["ann", "bob"])
    db.close()
    with serve_process(path) as (url, _):
        httpx.get(url + "/api/projects/1/next", headers={"Authorization": f"Bearer {tokens['ann']}"}).raise_for_status()
        yield url, tokens["ann"]


@pytest.mark.parametrize("role", ["labeler", "admin"])
def test_schemathesis_finds_nothing(live, role, tmp_path):
    pytest.importorskip("schemathesis", reason="schemathesis not installed (pip install -e '.[dev]')")
    url, labeler_token = live
    paths = httpx.get(url + "/openapi.json").json()["paths"]
    # The chat routes generate with a model and delete users: tests/personalize covers them with a tiny model.
    tested = [p for p in paths if not p.startswith(("/api/chat/", "/api/admin/users/"))]
    operations = sum(len(paths[p]) for p in tested if p.startswith("/api/admin/") == (role == "admin"))
    assert operations >= (7 if role == "admin" else 5)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    token, only = (ADMIN, "--include-path-regex") if role == "admin" else (labeler_token, "--exclude-path-regex")
    regex = "^/api/admin/(?!users/)" if role == "admin" else "^/api/(admin|chat)/"
    r = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", f"{url}/openapi.json",
         "--checks", "all", "-H", f"Authorization: Bearer {token}", only, regex,
         "--max-examples", str(MAX_EXAMPLES), "--seed", "1", "--generation-database", "none", "--no-color"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-2000:]
    assert re.search(rf"Tested: {operations}\b", r.stdout), r.stdout[-3000:]
    assert "No issues found" in r.stdout and re.search(r"(\d+) generated, \1 passed", r.stdout), r.stdout[-3000:]


@pytest.fixture()
def client(hot_db):
    with TestClient(create_app(ServeConfig(admin_token=ADMIN), hot_db)) as c:
        yield c


def test_every_route_documents_its_errors_with_the_error_schema(client):
    spec = client.get("/openapi.json").json()
    error_ref = {"$ref": "#/components/schemas/ErrorOut"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # FastAPI's default 422 body is not ours
    ops = [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()]
    assert len(ops) >= 12
    for path, method, op in ops:
        where = f"{method.upper()} {path}"
        errors = {int(code): r for code, r in op["responses"].items() if int(code) >= 400}
        assert {401, 503} <= set(errors), where  # every route needs a token and the store
        assert op["security"] == [{"AdminToken" if path.startswith("/api/admin/") else "LabelerToken": []}], where
        if op.get("parameters") or "requestBody" in op:
            assert 422 in errors, where
        if "requestBody" in op:
            assert 400 in errors, where
        for code, r in errors.items():
            assert r["content"]["application/json"]["schema"] == error_ref, (where, code)


def test_error_bodies_match_the_error_schema(client, hot_db):
    from rlhf.feedback.web.errors import ErrorOut

    token = add_labelers(hot_db, ["eve"])["eve"]
    bearer = {"Authorization": f"Bearer {token}"}
    r = client.post("/api/assignments/1/judgement", json={"ranking": "first"}, headers=bearer)
    body = ErrorOut.model_validate(r.json())
    assert r.status_code == 422 and body.errors and body.errors[0].loc == ["body", "ranking"]
    assert "ranking" in body.detail
    for r, status in [
        (client.get("/api/me"), 401),
        (client.get("/api/assignments/99", headers=bearer), 404),
        (client.get("/api/projects/0/next", headers=bearer), 422),
        (client.post("/api/admin/labelers", json={"name": "eve"}, headers={"Authorization": f"Bearer {ADMIN}"}), 409),
    ]:
        assert r.status_code == status and ErrorOut.model_validate(r.json()).detail, r.text


def test_405_allow_lists_every_method_of_the_path(client):
    r = client.options("/api/admin/projects/1/exclusions/1", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, PUT"
    r = client.post("/api/me")
    assert r.status_code == 405 and r.headers["allow"] == "GET" and r.json() == {"detail": "Method Not Allowed"}


def test_patterns_mean_what_the_server_checks():
    """The spec's patterns use explicit classes, so ECMA-262 (the spec's validators), Rust (Pydantic) and
    Python (str.strip, used when storing) agree on them."""
    import re

    from rlhf.feedback.web.schemas import NAME_PATTERN, WHITESPACE

    space = re.compile(f"[{WHITESPACE}]")
    assert [hex(i) for i in range(sys.maxunicode + 1) if bool(space.fullmatch(chr(i))) != chr(i).isspace()] == []
    name = re.compile(NAME_PATTERN)
    for good in ["ann", "José Ünal", "张伟", "a b", "<b>"]:
        assert name.search(good) and good.strip() == good
    for bad in [" ann", "ann ", "ann\u00a0", "a\x07b", "\u3000", "a\u2028b", ""]:
        assert not name.search(bad)
