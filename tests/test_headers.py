"""Security headers on every response of a real server, and no server banner."""

from __future__ import annotations

import httpx
import pytest

from ui.headers import security_headers

EMBEDDING_SITE = "https://portal.example.gov.cn"


class FailingAssistant:
    """The real assistant, except that answering fails: the 500 path."""

    def __init__(self, assistant):
        self.assistant = assistant

    def ask(self, *args, **kwargs):
        raise RuntimeError("boom")

    def __getattr__(self, name):
        return getattr(self.assistant, name)


def requests_of_every_kind(base: str) -> dict[str, httpx.Response]:
    return {
        "chat page": httpx.get(base + "/"),
        "Gradio config": httpx.get(base + "/config"),
        "API docs": httpx.get(base + "/docs"),
        "JSON API": httpx.get(base + "/api/documents"),
        "validation error": httpx.post(base + "/api/ask", json={}),
        "unknown path": httpx.get(base + "/no-such-page"),
        "wrong method": httpx.request("TRACE", base + "/api/ask"),
        "bot": httpx.get(base + "/wechat"),
        "OpenAI route": httpx.get(base + "/v1/models"),
    }


def test_every_kind_of_response_carries_the_headers_and_no_banner(live_server):
    for kind, response in requests_of_every_kind(live_server).items():
        assert response.headers["x-content-type-options"] == "nosniff", kind
        assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin", kind
        assert response.headers["x-frame-options"] == "SAMEORIGIN", kind
        assert response.headers["content-security-policy"] == "frame-ancestors 'self'", kind
        assert "server" not in response.headers, kind


def test_an_unhandled_error_still_carries_the_headers(serve_app, assistant):
    base = serve_app(FailingAssistant(assistant))
    response = httpx.post(base + "/api/ask", json={"question": "虹桥国际开放枢纽包括哪些区域？"})
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "SAMEORIGIN"


def test_a_site_that_embeds_the_chat_page_is_allowed_to_frame_it(serve_app):
    base = serve_app(frame_ancestors=[EMBEDDING_SITE])
    response = httpx.get(base + "/")
    assert response.headers["content-security-policy"] == f"frame-ancestors 'self' {EMBEDDING_SITE}"
    assert "x-frame-options" not in response.headers  # it cannot name another site


@pytest.mark.parametrize("ancestors", [(), (EMBEDDING_SITE,)])
def test_headers_a_response_sets_itself_are_kept(ancestors):
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from ui.headers import SecurityHeaders

    def own(request):
        return PlainTextResponse("x", headers={"Referrer-Policy": "no-referrer"})

    app = SecurityHeaders(Starlette(routes=[Route("/", own)]), security_headers(ancestors))
    response = TestClient(app).get("/")
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
