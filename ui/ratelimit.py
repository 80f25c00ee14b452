"""Rate limits: per client address on the routes that answer questions, per user on the bots.

Counting is the `limits` library's moving window in process memory: a client may send
`burst` requests at once, then `burst` per `burst / per_s` seconds, which is `per_s` a
second on average. Over the limit, a request gets 429 with `Retry-After` and the Chinese
message, before its body is read.

The client address is the connection's peer as uvicorn reports it. Behind a reverse proxy
uvicorn's ProxyHeadersMiddleware replaces it with the `X-Forwarded-For` address, but only
for connections from `--forwarded-allow-ips` (settings.service.forwarded_allow_ips): a client
that talks to us directly cannot choose its own address.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ui.errors import error_body


def limited_message(retry_after_s: int) -> str:
    return f"请求过于频繁，请 {retry_after_s} 秒后再试。"


class RateLimit:
    """At most `burst` hits per key within any `burst / per_s` seconds (rounded to whole
    seconds, at least one). `per_s` or `burst` 0 turns the limit off.

    :raises ValueError: for a negative rate or burst.
    """

    def __init__(self, per_s: float, burst: int, namespace: str):
        if per_s < 0 or burst < 0:
            raise ValueError("per_s and burst must not be negative")
        self.enabled = per_s > 0 and burst > 0
        self.window_s = max(1, round(burst / per_s)) if self.enabled else 0
        self._item = RateLimitItemPerSecond(
            max(burst, 1), max(self.window_s, 1), namespace=namespace
        )
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, key: str) -> int | None:
        """Counts one request for `key`: None when it is allowed, otherwise the whole
        seconds until the window lets one through (for `Retry-After`)."""
        if not self.enabled or self._limiter.hit(self._item, key):
            return None
        reset_time = self._limiter.get_window_stats(self._item, key).reset_time
        return max(1, math.ceil(reset_time - time.time()))


@dataclass(frozen=True)
class LimitedRoute:
    """Requests with `method` to `path` (exactly, or every path under it) count."""

    path: str
    methods: frozenset[str]
    exact: bool = False

    def matches(self, method: str, path: str) -> bool:
        if method not in self.methods:
            return False
        return path == self.path if self.exact else path.startswith(self.path)


_ANY = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
_POST = frozenset({"POST"})

# The routes that make the assistant answer (or, for /v1, all of the OpenAI-compatible API,
# whose clients poll /v1/models too). The chat page asks through Gradio's queue: every event
# joins it with POST /gradio_api/queue/join; run/, api/ and call/ run an event directly.
LIMITED_ROUTES = (
    LimitedRoute("/api/ask", _POST, exact=True),
    LimitedRoute("/v1/", _ANY),
    LimitedRoute("/gradio_api/queue/join", _POST, exact=True),
    LimitedRoute("/gradio_api/run/", _POST),
    LimitedRoute("/gradio_api/api/", _POST),
    LimitedRoute("/gradio_api/call/", _POST),
)


def _normalised(path: str) -> str:
    # "/api//ask/" reaches the same handler in some routers: count it as "/api/ask".
    return re.sub(r"/{2,}", "/", path).rstrip("/") or "/"


def too_many_requests(path: str, retry_after_s: int) -> JSONResponse:
    """The 429 answer: the project's error JSON, or OpenAI's error shape on /v1 (whose
    clients read `error.type` and retry after `Retry-After`).

    On the chat page's Gradio routes the JSON also has `detail` in the shape in which
    Gradio's own queue refuses an event whose inputs its validator rejects (422 from
    queue/join): one `{"is_valid": false, "message": ...}`, for the first input. The page's
    Gradio client then shows the Chinese message on the question box, and the typed question
    and the conversation stay in view. Any other 429 body it shows in a toast titled "Error"
    (without `detail`: the code, "rate_limited") and covers the chat with an error overlay
    (tests/test_ratelimit.py checks the page in chromium)."""
    message = limited_message(retry_after_s)
    if path.startswith("/v1/"):
        body = {"error": {"message": message, "type": "rate_limit_error", "param": None,
                          "code": "rate_limit_exceeded"}}
    elif path.startswith("/gradio_api/"):
        body = {**error_body("rate_limited", message), "detail": [{"is_valid": False, "message": message}]}
    else:
        body = error_body("rate_limited", message)
    return JSONResponse(body, status_code=429, headers={"Retry-After": str(retry_after_s)})


class ClientRateLimits:
    """ASGI middleware: counts requests to `routes` per client address against `limit`, all
    routes together, and answers 429 over it."""

    def __init__(
        self, app: ASGIApp, limit: RateLimit, routes: tuple[LimitedRoute, ...] = LIMITED_ROUTES
    ):
        self.app = app
        self.limit = limit
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.limit.enabled:
            path = _normalised(scope["path"])
            if any(route.matches(scope["method"], path) for route in self.routes):
                client = scope.get("client")
                retry_after_s = self.limit.hit(client[0] if client else "unknown")
                if retry_after_s is not None:
                    await too_many_requests(path, retry_after_s)(scope, receive, send)
                    return
        await self.app(scope, receive, send)
