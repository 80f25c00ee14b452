"""Security headers on every response, the chat page's and the API's alike.

Only headers that cannot break the page: Gradio needs inline scripts and styles, so there is
no script policy, only `frame-ancestors`. HSTS belongs where TLS ends (the reverse proxy),
not here: this server speaks plain HTTP on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def security_headers(frame_ancestors: Sequence[str] = ()) -> dict[str, str]:
    """The headers every response carries. Without `frame_ancestors`, only pages of this
    site may frame ours; with them, those origins may too (for a site that embeds the chat
    page), and X-Frame-Options, which cannot name them, is left out."""
    headers = {
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
    }
    if frame_ancestors:
        headers["Content-Security-Policy"] = "frame-ancestors 'self' " + " ".join(frame_ancestors)
    else:
        headers["Content-Security-Policy"] = "frame-ancestors 'self'"
        headers["X-Frame-Options"] = "SAMEORIGIN"
    return headers


class SecurityHeaders:
    """ASGI middleware adding `headers` to each HTTP response that does not set them."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]):
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    response_headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_security_headers(app: FastAPI, frame_ancestors: Sequence[str] = ()) -> None:
    """Wraps `app`'s whole middleware stack in `SecurityHeaders`. Outside it, not through
    `add_middleware`, because Starlette's ServerErrorMiddleware, which sends the 500 answer
    to an unhandled error, sits outside every added middleware."""
    build_stack = app.build_middleware_stack
    headers = security_headers(frame_ancestors)
    app.build_middleware_stack = (  # type: ignore[method-assign]
        lambda: SecurityHeaders(build_stack(), headers)
    )
