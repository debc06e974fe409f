"""The chat page in a real browser (Debian chromium driven by Playwright), checked against the database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rlhf.feedback import ServeConfig, add_labelers, open_database, store

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
]


@pytest.fixture()
def app_url(tmp_path, tiny_lm_dir):
    from rlhf.personalize.config import ChatConfig
    from rlhf.personalize.serving import ChatService, serve_in_background

    db = open_database(tmp_path / "feedback.db")
    tokens = add_labelers(db, ["ann"])
    chat = ChatService(ChatConfig(model=str(tiny_lm_dir), personal_dir=str(tmp_path / "personal"), max_new_tokens=10))
    with serve_in_background(chat, ServeConfig(port=0, admin_token="admin"), db) as url:
        yield url, tokens, db
    chat.close()
    db.close()


@pytest.fixture()
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def feedback(db) -> list[tuple]:
    with db.session() as s:
        return [(f.labeler, f.prompt, f.kind, f.ranking, f.thumbs) for f in store.chat_feedback(s)]


def test_chat_pick_b_then_thumbs_down(app_url, browser, tmp_path):
    url, tokens, db = app_url
    shots = Path(os.environ.get("RLHF_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
    page.goto(url + "/chat")
    page.wait_for_url(url + "/login")  # the same login as labeling
    page.fill("#token", tokens["ann"])
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")
    page.goto(url + "/chat")
    assert "the base model" in page.inner_text("#policy")

    # two replies side by side; ann prefers B
    page.fill("#message", "My house is too hot")
    page.keyboard.press("Enter")
    page.wait_for_selector(".turn .candidate >> nth=1")
    assert page.locator(".turn .candidate").count() == 2
    texts = page.locator(".turn .candidate .text").all_inner_texts()
    page.screenshot(path=str(shots / "chat.png"), full_page=True)
    page.click("button[data-choice=B]")
    page.wait_for_selector("#status.ok")
    assert page.locator(".candidate.chosen .letter").inner_text() == "Reply B"
    assert page.is_disabled("button[data-choice=A]")
    rows = feedback(db)
    assert rows == [("ann", "My house is too hot", "rank", ((1,), (0,)), None)]
    with db.session() as s:
        turn = store.get_turn(s, store.get_labeler(s, "ann"), 1)
        assert [c.text for c in turn.item.completions] == texts and turn.reply_completion_id == turn.item.completions[1].id

    # one reply, thumbs down, in the same conversation
    page.uncheck("#compare")
    page.fill("#message", "What about at night?")
    page.click("#send")
    page.wait_for_selector(".turn >> nth=1")
    page.wait_for_selector(".turn:nth-child(2) button[data-thumbs=down]")
    page.click(".turn:nth-child(2) button[data-thumbs=down]")
    page.wait_for_selector(".turn:nth-child(2) .candidate.down")
    assert feedback(db)[1] == ("ann", "What about at night?", "thumbs", None, (-1,))

    # the conversation is listed and reloads with its choices
    page.reload()
    assert page.locator("#conversations li").count() == 1
    page.click("#conversations li button")
    page.wait_for_selector(".turn:nth-child(2)")
    assert page.locator(".candidate.chosen").count() == 1 and page.is_disabled("button[data-thumbs=up]")
