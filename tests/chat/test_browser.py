"""The chat page in a real browser: Debian's Chromium driven by Playwright.

The server is the real command (``python -m trio_durable serve
examples.chat:app``) in a child process. Two browser contexts (two people,
one of them on a phone-sized window) join one room and exchange messages;
one reloads and sees the history exactly once; the other leaves and the
roster follows. Two tabs on one address (the quick start) send messages as
fast as they can type without a refusal, and a refused message stays in
the input box. Screenshots land in ``tests/chat/artifacts/``.

Chromium is installed by ``.ci/run`` (``apt-get install chromium``); without
it the test is skipped on a developer machine and fails under CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import cli_server

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 10_000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def join(page: Any, url: str, name: str, room: str) -> None:
    page.goto(url + "/")
    page.fill("#name", name)
    page.fill("#room", room)
    page.click("#join")
    wait_connected(page)


def wait_connected(page: Any) -> None:
    page.wait_for_selector("#status[data-state=ready]", timeout=TIMEOUT_MS)


def say(page: Any, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def messages(page: Any) -> list[str]:
    texts: list[str] = page.locator("#messages .msg .text").all_inner_texts()
    return texts


def roster(page: Any) -> list[str]:
    names: list[str] = page.evaluate(
        "[...document.querySelectorAll('#roster li')].map(li => li.firstChild.textContent)"
    )
    return names


def wait_for_messages(page: Any, expected: list[str]) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll('#messages .msg').length >= n",
        arg=len(expected),
        timeout=TIMEOUT_MS,
    )
    assert messages(page) == expected, f"{messages(page)} != {expected}"


def wait_for_roster(page: Any, expected: list[str]) -> None:
    page.wait_for_function(
        "want => [...document.querySelectorAll('#roster li')]"
        ".map(li => li.textContent).join('|') === want",
        arg="|".join(expected),
        timeout=TIMEOUT_MS,
    )


def test_two_people_chat_reload_and_leave(browser: Any, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with cli_server(tmp_path / "data") as (_process, url):
        desk = browser.new_context(viewport={"width": 1100, "height": 700})
        phone = browser.new_context(
            viewport={"width": 390, "height": 720}, is_mobile=True, has_touch=True
        )
        errors: list[str] = []
        ada = desk.new_page()
        bob = phone.new_page()
        for page in (ada, bob):
            page.set_default_timeout(TIMEOUT_MS)
            page.on("pageerror", lambda error: errors.append(str(error)))

        join(ada, url, "Ada", "lobby")
        join(bob, url, "Bob", "lobby")
        wait_for_roster(ada, ["Ada", "Bob"])
        wait_for_roster(bob, ["Ada", "Bob"])
        assert ada.is_visible("text=Bob joined"), "a join after ready shows a notice"

        say(ada, "Hello from Ada")
        wait_for_messages(bob, ["Hello from Ada"])
        reply = "Hi Ada! Testing <b>escaping</b> & a long line " + "lorem ipsum " * 8
        say(bob, reply)
        both = ["Hello from Ada", reply]
        wait_for_messages(ada, both)
        wait_for_messages(bob, both)
        assert ada.locator("#messages b").count() == 0, "message text is not HTML"
        assert ada.locator("#messages .msg.mine").all_inner_texts()[0].endswith(both[0])

        # Reload: the page rejoins by itself (room in the URL hash, name
        # remembered) and shows the backlog exactly once.
        ada.reload()
        wait_connected(ada)
        wait_for_roster(ada, ["Ada", "Bob"])
        assert messages(ada) == both, "the backlog appears once after a reload"
        say(bob, "welcome back")
        wait_for_messages(ada, [*both, "welcome back"])

        ada.screenshot(path=str(ARTIFACTS / "chat.png"))
        bob.screenshot(path=str(ARTIFACTS / "chat-phone.png"))

        # Bob leaves: Ada's roster follows and she is told.
        bob.close()
        wait_for_roster(ada, ["Ada"])
        ada.wait_for_selector("text=Bob left")
        assert ada.inner_text("#roster-count") == "1"
        assert errors == [], f"JavaScript errors: {errors}"
        desk.close()
        phone.close()


def test_private_room_button_and_long_name(browser: Any, tmp_path: Path) -> None:
    with cli_server(tmp_path / "data") as (_process, url):
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url + "/")
        page.fill("#name", "Cy")
        page.click("#new-room")
        wait_connected(page)
        room = page.input_value("#room")
        assert len(room) == 64 and page.url.endswith("#" + room), (room, page.url)

        # A name the server refuses brings the picker back with the reason.
        other = context.new_page()
        other.goto(url + "/")
        other.fill("#room", "lobby")
        other.evaluate("document.getElementById('name').removeAttribute('maxlength')")
        other.fill("#name", "n" * 40)
        other.click("#join")
        other.wait_for_selector("#picker-error:has-text('Name too long')")
        assert other.is_visible("#picker") and not other.is_visible("#chat")
        context.close()


def test_two_tabs_on_one_address_chat_quickly_without_refusal(browser: Any, tmp_path: Path) -> None:
    """The quick start as written: the demo's own limits, both tabs on 127.0.0.1."""
    with cli_server(tmp_path / "data") as (_process, url):
        contexts = [browser.new_context(), browser.new_context()]
        ada, bob = (context.new_page() for context in contexts)
        errors: list[str] = []
        for page in (ada, bob):
            page.set_default_timeout(TIMEOUT_MS)
            page.on("pageerror", lambda error: errors.append(str(error)))
        join(ada, url, "Ada", "lobby")
        join(bob, url, "Bob", "lobby")
        wait_for_roster(ada, ["Ada", "Bob"])
        sent = []
        for i in range(4):  # as fast as Playwright types: far faster than people
            for name, page in (("Ada", ada), ("Bob", bob)):
                text = f"{name} says {i}"
                say(page, text)
                sent.append(text)
        for page in (ada, bob):
            page.wait_for_function(
                "n => document.querySelectorAll('#messages .msg').length >= n",
                arg=len(sent),
                timeout=TIMEOUT_MS,
            )
            seen = messages(page)
            # Two tabs send over two sockets: the room orders them as they
            # arrive, so only each author's own order is fixed.
            assert sorted(seen) == sorted(sent), f"{seen} != {sent}"
            for name in ("Ada", "Bob"):
                own = [text for text in seen if text.startswith(name)]
                assert own == [text for text in sent if text.startswith(name)], seen
            refusals = page.locator("#messages .notice.error").all_inner_texts()
            assert refusals == [], f"normal chatting was refused: {refusals}"
        assert errors == [], f"JavaScript errors: {errors}"
        for context in contexts:
            context.close()


def test_a_refused_message_stays_in_the_input(browser: Any, tmp_path: Path) -> None:
    strict = {"CHAT_SESSION_BURST": "1", "CHAT_SESSION_INTERVAL": "600"}
    with cli_server(tmp_path / "data", env=strict) as (_process, url):
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        join(page, url, "Ada", "lobby")
        say(page, "first")
        wait_for_messages(page, ["first"])
        say(page, "second, too soon")
        page.wait_for_selector("#messages .notice.error:has-text('too fast')")
        assert page.input_value("#input") == "second, too soon", "the refused text is back"
        assert messages(page) == ["first"], "and it was not posted"
        context.close()
