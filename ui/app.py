"""The web application: JSON API, offline API docs and the Gradio chat page on one port.

`app.state.assistant` is the one place the serving assistant lives. Every route and chat
callback reads it per request, so a rebuilt index goes live by assigning it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corpus.settings import Settings
from ui import api, kb, openai_compat, wechat, wecom
from ui.errors import HTTP_STATUS_MESSAGES, UnroutedRequests, error_body, install_error_handlers
from ui.deps import OpenAIKeyError, admin_key_problem
from ui.feedback import FeedbackStore, IssuedAnswers
from ui.headers import install_security_headers
from ui.ratelimit import ClientRateLimits, RateLimit

if TYPE_CHECKING:
    from qa import Assistant

log = logging.getLogger("policyqa.app")
request_log = logging.getLogger("policyqa.http")  # only the one JSON line per request

DOCS_STATIC_URL = "/docs-static"
ADMIN_UPLOAD_PATH = "/admin/gradio_api/upload"  # the knowledge-base page's file input
API_DESCRIPTION = """
依据政策文件原文回答问题并注明出处的问答服务。Extractive answers with citations over
Chinese policy documents. Errors are JSON `{"error", "message", "details"}` with a Chinese
`message`; the submitted input is never echoed back.
"""


def api_routers(settings: Settings) -> list[APIRouter]:
    """Routers served before the chat page; add new ones (e.g. the bots'
    `create_router(settings)`) here. They must be included before Gradio is mounted at "/",
    which would otherwise shadow them."""
    return [api.router, kb.router]


@dataclass(frozen=True)
class BodyLimit:
    """The body size allowed on `path` (an exact path, or every path under it)."""

    path: str
    max_bytes: int
    exact: bool = False

    def matches(self, path: str) -> bool:
        return path == self.path if self.exact else path.startswith(self.path)


def body_limits(settings: Settings) -> list[BodyLimit]:
    """Each route's body size limit, first match wins; other paths (the chat page's Gradio
    routes, /docs) get settings.service.max_chat_request_bytes."""
    return [
        # Document uploads get the document size limit; ui.kb checks the file itself exactly.
        BodyLimit(kb.UPLOAD_PATH, settings.corpus.max_document_bytes + kb.UPLOAD_OVERHEAD_BYTES, exact=True),
        BodyLimit(ADMIN_UPLOAD_PATH, settings.corpus.max_document_bytes + kb.UPLOAD_OVERHEAD_BYTES, exact=True),
        BodyLimit("/api/", settings.service.max_request_bytes),
        BodyLimit("/v1/", settings.service.max_openai_request_bytes),
        BodyLimit("/wechat", settings.bots.bot_max_body_bytes),
        BodyLimit("/wecom", settings.bots.bot_max_body_bytes),
    ]


class _BodyRefused(HTTPException):
    """Raised into the app by `RequestBodyLimits`' receive. An HTTPException, because
    FastAPI re-raises those when met while parsing a body instead of answering 400."""


class RequestBodyLimits:
    """Bounds every request body, by its route's size limit and by time, before it is parsed.

    A body declared (Content-Length) over the limit is answered 413 at once, unread. A body
    sent in chunks is counted as the app reads it: the read that passes the limit fails, and
    so does a read still waiting for the body `timeout_s` after the request began (408, a
    slowly sent body). The app's own reply to that failed read is dropped and the client gets
    the error JSON. Starlette's RequestBodyLimitMiddleware counts the same way, but answers
    in English plain text and has no time limit.
    """

    def __init__(
        self, app: ASGIApp, limits: list[BodyLimit], default_bytes: int, timeout_s: float
    ):
        self.app = app
        self.limits = limits
        self.default_bytes = default_bytes
        self.timeout_s = timeout_s

    def limit_for(self, path: str) -> int:
        return next((limit.max_bytes for limit in self.limits if limit.matches(path)), self.default_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
            await _refusal(413, max_bytes)(scope, receive, send)
            return
        deadline = time.monotonic() + self.timeout_s
        received = 0
        complete = False
        refused: int | None = None  # the status we answer instead of the app
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, complete, refused
            if refused is not None:
                raise _BodyRefused(refused)
            if complete:  # only http.disconnect can come now: wait for it as long as it takes
                return await receive()
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                    message = await receive()
            except TimeoutError:
                refused = 408
                raise _BodyRefused(refused) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    refused = 413
                    raise _BodyRefused(refused)
                complete = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused is not None and not response_started:
                return  # the app's answer to the read we failed
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if refused is None or response_started:
                raise
        if refused is not None and not response_started:
            await _refusal(refused, max_bytes)(scope, receive, send)


def _size_text(size: int) -> str:
    return f"{size / 1024 / 1024:g} MB" if size >= 1024 * 1024 else f"{size // 1024} KB"


def _refusal(status: int, max_bytes: int) -> JSONResponse:
    """The 413 or 408 answer; the connection is closed, since the body was not read."""
    if status == 408:
        body = error_body("body_timeout", "请求体发送超时，请重试。")
    else:
        body = error_body("too_large", f"请求体过大（最多 {_size_text(max_bytes)}）。")
    return JSONResponse(body, status_code=status, headers={"connection": "close"})


# Gradio routes the chat page does not use that take files from anyone and keep them in
# Gradio's temp folder, which Gradio then serves back: closed (the page has no file input).
CLOSED_GRADIO_PATHS = frozenset(
    f"/gradio_api/{name}"
    for name in ("upload", "upload_progress", "process_recording", "component_server")
)


class ClosedRoutes:
    """Answers 404 (the error JSON) for `paths` under the chat page, before Gradio sees the
    request. Paths are compared with repeated and trailing slashes removed."""

    def __init__(self, app: ASGIApp, paths: frozenset[str] = CLOSED_GRADIO_PATHS):
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _normalised(scope["path"]) in self.paths:
            closed = JSONResponse(error_body("http_404", HTTP_STATUS_MESSAGES[404]), status_code=404)
            await closed(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _normalised(path: str) -> str:
    return re.sub(r"/{2,}", "/", path).rstrip("/")


class RequestLog:
    """One JSON log line per HTTP request: method, path, status, ms, and the question when
    a route put it in `request.state.question` (only if settings.service.log_questions)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            record = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            }
            question = (scope.get("state") or {}).get("question")
            if question is not None:
                record["question"] = question[:500]
            request_log.info(json.dumps(record, ensure_ascii=False))


def _offline_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from files in the fastapi-offline package, not a CDN."""
    try:
        import fastapi_offline
    except ImportError:
        log.warning("fastapi-offline is not installed: /docs disabled, /openapi.json still works")
        return
    static_dir = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_STATIC_URL, StaticFiles(directory=static_dir), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title="policy-qa API",
            swagger_js_url=f"{root}{DOCS_STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_STATIC_URL}/favicon.png",
        )


def _page_options() -> dict:
    """What both Gradio pages are mounted with: the page's look, nothing fetched from outside,
    no tracebacks shown, no MCP server or run history."""
    from ui.chat import PAGE_CSS, chat_theme

    return {"footer_links": [], "theme": chat_theme(), "css": PAGE_CSS, "show_error": False,
            "ssr_mode": False, "mcp_server": False, "run_history": False}


def _mount_admin_page(app: FastAPI, settings: Settings) -> None:
    """The knowledge-base page at /admin, behind Gradio's login with the admin key (which
    also guards its upload, file and queue routes)."""
    import gradio as gr

    from ui.admin import ADMIN_PATH, LOGIN_MESSAGE, build_admin, key_checker

    gr.mount_gradio_app(
        app,
        build_admin(settings, app.state),
        path=ADMIN_PATH,
        auth=key_checker(settings),
        auth_message=LOGIN_MESSAGE,
        max_file_size=settings.corpus.max_document_bytes,
        **_page_options(),
    )


def _load_assistant(settings: Settings) -> "Assistant":
    from qa import Assistant

    return Assistant.load(settings)


def create_app(
    settings: Settings, assistant: "Assistant | None" = None, watch_index: bool = False
) -> FastAPI:
    """The whole web application. Without an `assistant`, the index at settings.index.index_dir
    is loaded at start-up; if that fails the app still starts, /readyz answers 503 and
    /api/ask answers 503 until `app.state.assistant` is set. With `watch_index` (as `policyqa
    serve` runs it) and settings.service.index_reload_interval_s above 0, builds that another
    process publishes to settings.index.index_dir are loaded and swapped in (`ui.reload`)."""
    import gradio as gr

    from ui.chat import build_chat
    from ui.reload import IndexWatcher

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.assistant is None:
            try:
                app.state.assistant = await asyncio.to_thread(_load_assistant, settings)
            except Exception as error:  # the app keeps running and reports not-ready
                log.error("index not loaded from %s: %s", settings.index.index_dir, error)
        watcher = None
        if watch_index and settings.service.index_reload_interval_s > 0:
            watcher = IndexWatcher(app, lambda: _load_assistant(settings),
                                   settings.service.index_reload_interval_s)
            watcher.start()
        app.state.watcher = watcher
        try:
            yield
        finally:
            if watcher is not None:
                watcher.stop()
            app.state.watcher = None

    app = FastAPI(
        title="policy-qa 政策问答",
        description=API_DESCRIPTION,
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.assistant = assistant
    app.state.feedback = FeedbackStore(settings.service.feedback_db)
    app.state.issued_answers = IssuedAnswers()  # what /api/feedback may rate, by answer_id
    kb.install(app, settings)  # app.state.rebuild: background rebuilds swap app.state.assistant
    install_error_handlers(app)
    app.add_exception_handler(OpenAIKeyError, openai_compat.on_key_error)
    app.add_middleware(
        RequestBodyLimits,
        limits=body_limits(settings),
        default_bytes=settings.service.max_chat_request_bytes,
        timeout_s=settings.service.request_body_timeout_s,
    )
    app.add_middleware(ClosedRoutes)
    app.add_middleware(UnroutedRequests)
    app.add_middleware(
        ClientRateLimits,
        limit=RateLimit(settings.service.rate_limit_per_s, settings.service.rate_limit_burst, "client"),
    )
    if settings.service.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.service.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization"],
        )
    app.add_middleware(RequestLog)
    install_security_headers(app, settings.service.frame_ancestors)

    for router in api_routers(settings):
        app.include_router(router)
    bot_routers = (wechat.create_router, wecom.create_router, openai_compat.create_router)
    for create_bot_router in bot_routers:
        app.include_router(create_bot_router(settings))
    _offline_docs(app)

    if admin_key_problem(settings.service.admin_api_key) is None:
        _mount_admin_page(app, settings)
    page = build_chat(settings, lambda: app.state.assistant, app.state.feedback)
    return gr.mount_gradio_app(
        app,
        page,
        path="/",
        server_name=settings.service.host,
        server_port=settings.service.port,
        **_page_options(),
    )
