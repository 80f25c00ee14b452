"""The chat page in a real browser (Debian's chromium via Playwright) against the real server.

Set UPDATE_SCREENSHOT=1 to also refresh docs/screenshot-chat.png for the README.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect

from corpus.settings import PROJECT_ROOT
from ui.render import highlight, render
from ui.feedback import FeedbackStore

CHROMIUM = "/usr/bin/chromium"
QUESTION = "虹桥国际开放枢纽包括哪些区域？"
FOLLOW_UP = "它的发展目标是什么？"
# Any refusal shows the not-found state; a question in English is refused whatever the
# refusal threshold is set to (tests/test_api.py covers refusing unanswerable Chinese ones).
REFUSED = "What is the capital of France?"
PLAN_TITLE = "虹桥国际开放枢纽建设总体方案"
ANSWER_TIMEOUT_MS = 60_000
ARTIFACTS = PROJECT_ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


class ChatPage:
    """The chat page, driven the way a user does, recording every request it makes."""

    def __init__(self, browser, base_url: str, width: int = 1100, height: int = 900):
        self.base_url = base_url
        self.requests: list[str] = []
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.goto(base_url + "/", wait_until="load")
        self.page.wait_for_selector("#pqa-question textarea", timeout=ANSWER_TIMEOUT_MS)

    def answers(self):
        return self.page.locator("#pqa-chatbot .pqa-answer")

    def ask(self, question: str, press_enter: bool = False) -> None:
        before = self.page.locator("#pqa-chatbot .message-row").count()
        self.page.fill("#pqa-question textarea", question)
        if press_enter:
            self.page.press("#pqa-question textarea", "Enter")
        else:
            self.page.click("#pqa-send")
        self.page.wait_for_function(
            "n => document.querySelectorAll('#pqa-chatbot .message-row').length >= n + 2",
            arg=before,
            timeout=ANSWER_TIMEOUT_MS,
        )

    def last_answer_text(self) -> str:
        return self.page.locator("#pqa-chatbot .message-row").last.inner_text()

    def external_requests(self) -> list[str]:
        return [
            url
            for url in self.requests
            if urlparse(url).scheme in ("http", "https", "ws", "wss")
            and urlparse(url).hostname != "127.0.0.1"
        ]

    def close(self) -> None:
        self.context.close()


def wait_for(condition, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    return condition()


@pytest.mark.browser
def test_ask_follow_up_and_thumbs_up(browser, live_server, seed_settings):
    chat = ChatPage(browser, live_server)
    try:
        chat.ask(QUESTION)
        answer = chat.last_answer_text()
        assert "长宁区" in answer
        assert f"《{PLAN_TITLE}》" in answer  # the numbered source names the document
        assert chat.page.locator("#pqa-chatbot .pqa-sources li").count() >= 1
        assert chat.page.locator("#pqa-chatbot .pqa-answer mark").count() >= 1

        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "chat-answered.png"
        chat.page.screenshot(path=str(screenshot), full_page=True)
        if os.environ.get("UPDATE_SCREENSHOT") == "1":
            (PROJECT_ROOT / "docs").mkdir(exist_ok=True)
            shutil.copyfile(screenshot, PROJECT_ROOT / "docs" / "screenshot-chat.png")

        chat.ask(FOLLOW_UP, press_enter=True)
        assert chat.answers().count() == 2
        assert "按上下文理解为" in chat.last_answer_text()  # the rewritten question is shown
        assert "虹桥" in chat.last_answer_text()

        chat.page.locator("#pqa-chatbot button[aria-label='Like']").first.click()
        store = FeedbackStore(seed_settings.service.feedback_db)
        rated = wait_for(
            lambda: [i for i in store.items(rating="up") if i.source == "chat" and i.question == QUESTION]
        )
        assert rated, "the thumbs-up did not reach the feedback database"
        assert rated[0].answer["answered"] is True
        assert "001" in {citation["doc_id"] for citation in rated[0].citations}

        chat.page.locator("#pqa-chatbot button[aria-label='Dislike']").last.click()
        disliked = wait_for(
            lambda: [i for i in store.items(rating="down") if i.source == "chat" and i.question == FOLLOW_UP]
        )
        assert disliked and disliked[0].history == (QUESTION,)

        # Taking the thumbs-up back removes its row; the follow-up's rating stays.
        chat.page.locator("#pqa-chatbot button[aria-label='Liked']").first.click()
        assert wait_for(lambda: not [i for i in store.items() if i.id == rated[0].id])
        assert [i.id for i in store.items() if i.id == disliked[0].id]

        assert chat.external_requests() == []
    finally:
        chat.close()


@pytest.mark.browser
def test_refusal_says_not_found_and_lists_the_closest_passages(browser, live_server):
    chat = ChatPage(browser, live_server)
    try:
        chat.ask(REFUSED)
        refused = chat.last_answer_text()
        assert "未在文档中找到答案" in refused
        assert "最接近的段落" in refused
        assert chat.page.locator("#pqa-chatbot .pqa-refused").count() == 1
        assert chat.page.locator("#pqa-chatbot .pqa-sources li").count() >= 1
    finally:
        chat.close()


@pytest.mark.browser
def test_examples_document_filter_and_start_over(browser, live_server):
    chat = ChatPage(browser, live_server)
    try:
        chat.page.locator("#pqa-examples").get_by_text(QUESTION, exact=True).click()
        expect(chat.page.locator("#pqa-question textarea")).to_have_value(QUESTION)

        chat.page.get_by_text("筛选（可选）").click()
        chat.page.locator("#pqa-documents input").click()
        options = chat.page.locator("[data-testid=dropdown-option]")
        options.first.wait_for()
        titles = [options.nth(i).get_attribute("aria-label") for i in range(options.count())]
        assert PLAN_TITLE in titles
        options.nth(titles.index(PLAN_TITLE)).click()
        chat.page.keyboard.press("Escape")
        assert chat.page.locator("#pqa-in-force input[type=checkbox]").count() == 1
        chat.ask("如何发挥进博会的溢出带动效应？")
        sources = chat.page.locator("#pqa-chatbot .message-row").last.locator(".pqa-source-title")
        assert sources.count() >= 1
        assert set(sources.all_inner_texts()) == {f"《{PLAN_TITLE}》"}

        chat.page.get_by_text("清空对话", exact=True).click()
        chat.page.wait_for_function(
            "() => document.querySelectorAll('#pqa-chatbot .message-row').length === 0"
        )
        assert chat.external_requests() == []
    finally:
        chat.close()


@pytest.mark.browser
def test_phone_width_has_no_horizontal_scroll(browser, live_server):
    chat = ChatPage(browser, live_server, width=390, height=844)
    try:
        chat.ask(QUESTION)
        assert "长宁区" in chat.last_answer_text()
        page_width = chat.page.evaluate("document.documentElement.scrollWidth")
        assert page_width <= 390
        box = chat.answers().last.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
        ARTIFACTS.mkdir(exist_ok=True)
        chat.page.screenshot(path=str(ARTIFACTS / "chat-phone.png"))
        assert chat.external_requests() == []
    finally:
        chat.close()


def test_highlight_marks_spans_and_escapes_the_text():
    assert highlight("甲<b>乙丙", [[1, 4]]) == "甲<mark>&lt;b&gt;</mark>乙丙"
    assert highlight("甲乙丙丁", [[2, 9], [0, 1], [1, 1]]) == "<mark>甲</mark>乙<mark>丙丁</mark>"
    assert highlight("甲\n乙", []) == "甲<br>乙"


def test_rendered_messages_escape_document_text():
    passage = {
        "title": "标题<script>alert(1)</script>",
        "section": "一、<img src=x onerror=alert(1)>",
        "quote": "原文<iframe></iframe>",
        "highlights": [[0, 2]],
        "note": None,
    }
    answered = render(
        {"answer": "答<b>案", "answered": True, "query": "问", "citations": [passage], "passages": []},
        "markdown", question="问",
    )
    refused = render(
        {"answer": "未找到", "answered": False, "query": "问", "citations": [], "passages": [passage] * 5},
        "markdown", question="问",
    )
    for message in (answered, refused):
        assert "<script>" not in message and "<img" not in message and "<iframe>" not in message
    assert "<mark>原文</mark>" in answered and "答&lt;b&gt;案" in answered
    assert "未在文档中找到答案" in refused and refused.count("<li>") == 3
    assert "按上下文理解为" not in answered


@pytest.mark.browser
def test_api_docs_render_without_a_cdn(browser, live_server):
    context = browser.new_context()
    try:
        page = context.new_page()
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(live_server + "/docs", wait_until="load")
        page.wait_for_selector(".opblock-summary-path", timeout=ANSWER_TIMEOUT_MS)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert "/api/ask" in "".join(paths)
        assert all(urlparse(url).hostname == "127.0.0.1" for url in requests if url.startswith("http"))
    finally:
        context.close()
