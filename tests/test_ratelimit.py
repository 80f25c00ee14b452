"""Rate limits per client address, over real servers and the real seed index.

Client addresses come from X-Forwarded-For, which uvicorn believes only on connections from
settings.service.forwarded_allow_ips: the test client (127.0.0.1) plays a trusted reverse proxy in
front of several clients, and, on a second server, an untrusted one whose header is ignored.
The servers keep the default burst of 20 but refill it over 40 s instead of the default
4 s, so that a burst sent from a loaded two-core machine still arrives inside one window;
the default rate itself is checked on the limiter, in real time. What a person sees on the
chat page over the limit is checked in Debian's chromium.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import time

import httpx
import pytest
from test_browser import ANSWER_TIMEOUT_MS, ChatPage, browser  # noqa: F401  (fixture)

from corpus.settings import BotSettings, ServiceSettings
from ui.ratelimit import RateLimit

QUESTION = "虹桥国际开放枢纽包括哪些区域？"
DEFAULTS = {**ServiceSettings.model_fields, **BotSettings.model_fields}
BURST = DEFAULTS["rate_limit_burst"].default
PER_S = DEFAULTS["rate_limit_per_s"].default
TEST_PER_S = BURST / 40


@pytest.fixture(scope="module")
def limited_url(serve_app) -> str:
    return serve_app(rate_limit_per_s=TEST_PER_S, rate_limit_burst=BURST)


def ask_as(url: str, client_address: str, path: str = "/api/ask") -> httpx.Response:
    headers = {"X-Forwarded-For": client_address}
    if path == "/api/ask":
        return httpx.post(url + path, json={"question": QUESTION}, headers=headers, timeout=120)
    return httpx.get(url + path, headers=headers, timeout=120)


def burst(url: str, client_addresses: list[str], path: str = "/api/ask") -> list[tuple[str, httpx.Response]]:
    """Every request at once, the clients' requests interleaved."""
    with ThreadPoolExecutor(max_workers=len(client_addresses)) as pool:
        responses = list(pool.map(lambda address: ask_as(url, address, path), client_addresses))
    return list(zip(client_addresses, responses))


def test_defaults_let_a_burst_of_twenty_through_at_five_a_second():
    assert (PER_S, BURST) == (5.0, 20)
    limit = RateLimit(PER_S, BURST, "test")
    assert limit.window_s == 4
    assert [limit.hit("office") for _ in range(BURST)] == [None] * BURST
    assert 1 <= limit.hit("office") <= 4
    assert limit.hit("another office") is None
    time.sleep(4.1)  # the window has moved past the burst
    assert [limit.hit("office") for _ in range(BURST)] == [None] * BURST


def test_a_burst_from_one_client_gets_429_beyond_the_limit_and_others_are_served(limited_url):
    results = burst(limited_url, ["10.0.0.1"] * (BURST + 10))
    statuses = Counter(response.status_code for _, response in results)
    print(f"\none client, {BURST + 10} requests at once: {dict(statuses)}")
    assert statuses == {200: BURST, 429: 10}
    refused = next(response for _, response in results if response.status_code == 429)
    assert 1 <= int(refused.headers["Retry-After"]) <= 40
    body = refused.json()
    assert body["error"] == "rate_limited"
    assert body["message"].startswith("请求过于频繁")
    other = ask_as(limited_url, "10.0.0.2")
    assert other.status_code == 200 and other.json()["answered"]


def test_a_burst_from_four_clients_limits_each_on_its_own(limited_url):
    # /v1/models answers at once: a hundred questions would keep two cores busy for minutes.
    clients = [f"10.0.1.{n}" for n in range(1, 5)]
    results = burst(limited_url, clients * (BURST + 5), path="/v1/models")
    per_client = {client: Counter() for client in clients}
    for client, response in results:
        per_client[client][response.status_code] += 1
    print(f"\nfour clients, {BURST + 5} requests each at once: "
          + ", ".join(f"{client}: {dict(counts)}" for client, counts in per_client.items()))
    for counts in per_client.values():
        assert counts == {200: BURST, 429: 5}
    bystander = ask_as(limited_url, "10.0.1.99")
    assert bystander.status_code == 200 and bystander.json()["answered"]


def test_the_openai_route_is_limited_with_openai_error_shape(limited_url):
    results = burst(limited_url, ["10.0.2.1"] * (BURST + 3), path="/v1/models")
    refused = [response for _, response in results if response.status_code == 429]
    assert len(refused) == 3
    assert refused[0].json()["error"]["type"] == "rate_limit_error"
    assert refused[0].headers["Retry-After"].isdigit()


def test_the_chat_page_queue_is_limited(limited_url):
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(
            lambda _: httpx.post(limited_url + "/gradio_api/queue/join", json={},
                                 headers={"X-Forwarded-For": "10.0.3.1"}, timeout=60),
            range(BURST + 4),
        ))
    refused = [response for response in responses if response.status_code == 429]
    assert len(refused) == 4
    # What the page's Gradio client shows on the question box (see the browser test below).
    [shown] = refused[0].json()["detail"]
    assert shown["is_valid"] is False and shown["message"].startswith("请求过于频繁")
    # The page itself and the docs are not counted.
    assert all(ask_as(limited_url, "10.0.3.1", "/").status_code == 200 for _ in range(3))


def test_forwarded_for_from_an_untrusted_proxy_is_ignored(serve_app):
    # 127.0.0.1 is not trusted here: the four "clients" are one address, the test's own.
    url = serve_app(rate_limit_per_s=TEST_PER_S, rate_limit_burst=BURST, forwarded_allow_ips="10.9.9.9")
    clients = [f"10.0.4.{n}" for n in range(1, 5)]
    results = burst(url, clients * 6, path="/v1/models")
    assert sum(response.status_code == 429 for _, response in results) == 4 * 6 - BURST


def test_zero_turns_the_limit_off(serve_app):
    url = serve_app(rate_limit_per_s=0, rate_limit_burst=BURST)
    results = burst(url, ["10.0.5.1"] * (BURST * 2), path="/v1/models")
    assert all(response.status_code == 200 for _, response in results)


# A burst of three over a minute: the page's own load event and two questions use it up.
CHAT_BURST = 3


@pytest.mark.browser
def test_the_chat_page_shows_the_chinese_message_over_the_limit(browser, serve_app):  # noqa: F811
    url = serve_app(rate_limit_per_s=CHAT_BURST / 60, rate_limit_burst=CHAT_BURST)
    chat = ChatPage(browser, url)
    refusals: list = []
    chat.page.on("response", lambda response: "/queue/join" in response.url
                 and response.status == 429 and refusals.append(response))
    question_box = chat.page.locator("#pqa-question")
    try:
        answered = 0
        for _ in range(CHAT_BURST + 1):  # the load event took one; a question is refused by then
            before = chat.page.locator("#pqa-chatbot .message-row").count()
            chat.page.fill("#pqa-question textarea", QUESTION)
            chat.page.click("#pqa-send")
            chat.page.wait_for_function(
                """n => document.querySelectorAll('#pqa-chatbot .message-row').length >= n + 2
                       || document.querySelector('#pqa-question').innerText.includes('请求过于频繁')""",
                arg=before, timeout=ANSWER_TIMEOUT_MS,
            )
            if refusals:
                break
            answered += 1
        assert refusals, "no question was refused"
        assert 1 <= answered < CHAT_BURST
        assert 1 <= int(refusals[0].headers["retry-after"]) <= 60

        # The Chinese message, on the question box; the question stays typed, the answers shown.
        shown = question_box.inner_text()
        assert "请求过于频繁，请" in shown and "秒后再试" in shown
        assert chat.page.input_value("#pqa-question textarea") == QUESTION
        assert chat.answers().count() == answered
        assert chat.answers().last.is_visible() and "长宁区" in chat.answers().last.inner_text()
        # No English error anywhere: no toast, no "Error" overlay, no error code.
        page_text = chat.page.locator("body").inner_text()
        assert "Error" not in page_text and "rate_limited" not in page_text
        assert chat.page.locator("[data-testid='toast-body'], .toast-body").count() == 0
    finally:
        chat.close()
