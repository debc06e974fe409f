"""The labeling UI in a real browser (Debian chromium driven by Playwright), checked against the database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rlhf.feedback import ServeConfig, add_labelers, import_generations, open_database, store
from rlhf.feedback.server import serve_in_background
from rlhf.types import Generation

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]
ADMIN = "browser-admin-token"
NOTHING = "There is nothing you can do about hot houses"
AIRCON = "You can cool your house with air conditioning"
NOT_HOT = "It is not too hot"
INSTRUCTIONS = """Rank the responses from **best** to **worst** for a user who asked for help.

- Prefer answers that are *helpful*: they address the request with concrete, correct advice.
- Prefer answers that are *harmless*: no insults, no dangerous advice.
- Mark a **tie** when two responses are equally good.
- Flag the item as unusable if the prompt is broken or every response is garbled.
"""

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
]


@pytest.fixture()
def app_url(tmp_path):
    db = open_database(tmp_path / "feedback.db")
    import_generations(
        db, [Generation("hot-house", "My house is too hot", (NOTHING, AIRCON, NOT_HOT))], "hot-house",
        criterion="harmless and helpful", instructions=INSTRUCTIONS,
    )
    tokens = add_labelers(db, ["ann", "bob", "cat"])
    with serve_in_background(ServeConfig(port=0, admin_token=ADMIN), db) as url:
        yield url, tokens, db
    db.close()


@pytest.fixture()
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def login(browser, url: str, token: str):
    page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
    page.goto(url + "/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")
    page.click("text=Start labeling")
    page.wait_for_selector("#instructions-dialog[open]")  # they open by themselves on a labeler's first item
    page.keyboard.press("Escape")
    page.wait_for_selector("#instructions-dialog", state="hidden")
    return page


def key_of(page, text: str) -> str:
    """The number key of the card showing `text` (cards are shuffled per labeler)."""
    texts = page.locator(".completion .text").all_inner_texts()
    return str(texts.index(text) + 1)


def rankings(db) -> dict[str, object]:
    with db.session() as s:
        rows = store.project_judgements(s, store.get_project(s, "hot-house"))
    return {r.labeler: r.ranking if r.kind == "rank" else (r.kind, r.flag_reason) for r in rows}


def test_label_with_keyboard_click_drag_and_flag(app_url, browser, tmp_path):
    url, tokens, db = app_url
    shots = Path(os.environ.get("RLHF_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)

    # ann: keyboard. Aircon first, then "nothing" and "not hot" tied (Shift+number ties with the rank above).
    page = login(browser, url, tokens["ann"])
    page.click("#open-instructions")
    assert "Mark a" in page.inner_text("#instructions-dialog") and page.is_visible("#instructions-dialog")
    page.keyboard.press("i")  # already open: no change
    page.click("#instructions-dialog [data-close]")
    page.keyboard.press(key_of(page, AIRCON))
    page.keyboard.press(key_of(page, NOTHING))
    page.keyboard.press("Shift+" + key_of(page, NOT_HOT))
    assert page.locator("#tiers .tier").count() == 2
    assert page.inner_text("#tiers .tier.tie .tier-rank") == "2nd · tie"
    page.screenshot(path=str(shots / "labeling.png"), full_page=True)
    page.keyboard.press("Enter")
    page.wait_for_selector("text=All done here")
    assert rankings(db) == {"ann": ((1,), (0, 2))}

    # bob: click to rank, undo, then drag "nothing" onto the top rank to tie it there; submit with the button.
    page = login(browser, url, tokens["bob"])
    card = lambda text: page.locator(".completion", has_text=text)  # noqa: E731
    assert page.is_disabled("#submit")
    card(NOT_HOT).click()
    card(NOTHING).click()
    page.click("#undo")
    card(AIRCON).click()
    card(NOTHING).click()
    assert page.is_enabled("#submit")
    letter = card(NOTHING).get_attribute("data-label")
    page.locator("#tiers .rank-chip", has_text=letter).drag_to(page.locator("#tiers .tier").first)
    assert page.inner_text("#tiers .tier.tie .tier-rank") == "1st · tie"
    page.click("#submit")
    page.wait_for_selector("text=All done here")
    assert rankings(db)["bob"] == ((0, 2), (1,))

    # cat: flags the item as unusable with a reason.
    page = login(browser, url, tokens["cat"])
    page.keyboard.press("f")
    page.click("#flag-reasons .chip >> nth=0")
    page.click("#flag-submit")
    page.wait_for_selector("text=All done here")
    assert rankings(db)["cat"] == ("flag", "Prompt is unclear or broken")

    # the admin sees everyone's progress and agreement.
    admin = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
    admin.goto(url + "/admin/login")
    admin.fill("#token", ADMIN)
    admin.click("button[type=submit]")
    admin.click("text=hot-house")
    admin.wait_for_selector("#labelers")
    assert admin.locator("#labelers tbody tr").count() == 3
    admin.screenshot(path=str(shots / "admin.png"), full_page=True)
