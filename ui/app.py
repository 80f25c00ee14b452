"""The web application: JSON API, offline API docs and the Gradio chat page on one port.

`app.state.assistant` is the one place the serving assistant lives. Every route and chat
callback reads it per request, so a rebuilt index goes live by assigning it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corpus.settings import Settings
from ui import api, kb, openai_compat, wechat, wecom
from ui.errors import error_body, install_error_handlers
from ui.feedback import FeedbackStore

if TYPE_CHECKING:
    from qa import Assistant

log = logging.getLogger("policyqa.app")
request_log = logging.getLogger("policyqa.http")  # only the one JSON line per request

DOCS_STATIC_URL = "/docs-static"
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


class BodySizeLimit:
    """Answers 413 to request bodies over `max_bytes` on the given path prefixes, before the
    body is parsed: by Content-Length when sent, else while streaming it in."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        path_prefixes: tuple[str, ...] = ("/api/",),
        exempt_paths: tuple[str, ...] = (),
    ):
        self.app = app
        self.max_bytes = max_bytes
        self.path_prefixes = path_prefixes
        self.exempt_paths = exempt_paths  # exact paths with a limit of their own

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not scope["path"].startswith(self.path_prefixes)
            or scope["path"] in self.exempt_paths
        ):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        if declared is not None:
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read it here, bounded, then replay it to the app.
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            body.extend(message.get("body", b""))
            if len(body) > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay([{"type": "http.request", "body": bytes(body)}], receive), send)

    async def _refuse(self, send: Send) -> None:
        kib = self.max_bytes // 1024
        payload = json.dumps(
            error_body("too_large", f"请求体过大（最多 {kib} KB）。"), ensure_ascii=False
        ).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


class RequestLog:
    """One JSON log line per HTTP request: method, path, status, ms, and the question when
    a route put it in `request.state.question` (only if settings.log_questions)."""

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


def _api_fallback(app: FastAPI) -> None:
    """JSON 404/405 for /api/ paths no route serves; without it they fall through to the
    chat page mounted at "/", which answers an English 404 even for a wrong method."""

    @app.api_route(
        "/api/{rest:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
        include_in_schema=False,
    )
    async def no_such_api(request: Request) -> None:
        # Routes answer GET or POST (the admin DELETE route matches before this one): when
        # the other of the two would be served, the path exists and only the method is wrong.
        scope = {**request.scope, "method": "GET" if request.method != "GET" else "POST"}
        other_method_served = any(
            route.matches(scope)[0] == Match.FULL
            for route in app.router.routes
            if not isinstance(route, Mount) and getattr(route, "path", None) != "/api/{rest:path}"
        )
        if request.method not in ("GET", "POST") or other_method_served:
            raise StarletteHTTPException(405)
        raise StarletteHTTPException(404, "没有这个接口。可用的接口见 /docs。")


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


def _load_assistant(settings: Settings) -> "Assistant":
    from qa import Assistant

    return Assistant.load(settings)


def create_app(settings: Settings, assistant: "Assistant | None" = None) -> FastAPI:
    """The whole web application. Without an `assistant`, the index at settings.index_dir
    is loaded at start-up; if that fails the app still starts, /readyz answers 503 and
    /api/ask answers 503 until `app.state.assistant` is set."""
    import gradio as gr

    from ui.chat import PAGE_CSS, build_chat, chat_theme

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.assistant is None:
            try:
                app.state.assistant = await asyncio.to_thread(_load_assistant, settings)
            except Exception as error:  # the app keeps running and reports not-ready
                log.error("index not loaded from %s: %s", settings.index_dir, error)
        yield

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
    app.state.feedback = FeedbackStore(settings.feedback_db)
    kb.install(app, settings)  # app.state.rebuild: background rebuilds swap app.state.assistant
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_request_bytes, exempt_paths=(kb.UPLOAD_PATH,)
    )
    # Document uploads get the document size limit; ui.kb checks the file itself exactly.
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_document_bytes + kb.UPLOAD_OVERHEAD_BYTES,
        path_prefixes=(kb.UPLOAD_PATH,),
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization"],
        )
    app.add_middleware(RequestLog)

    for router in api_routers(settings):
        app.include_router(router)
    bot_routers = (wechat.create_router, wecom.create_router, openai_compat.create_router)
    for create_bot_router in bot_routers:
        app.include_router(create_bot_router(settings))
    _api_fallback(app)
    _offline_docs(app)

    page = build_chat(settings, lambda: app.state.assistant, app.state.feedback)
    return gr.mount_gradio_app(
        app,
        page,
        path="/",
        server_name=settings.host,
        server_port=settings.port,
        footer_links=[],
        theme=chat_theme(),
        css=PAGE_CSS,
        show_error=False,
        ssr_mode=False,
        mcp_server=False,
        run_history=False,
    )
