"""Who may call what: the FastAPI dependencies that check the admin key and the /v1 key.

Both keys are compared in constant time (`hmac.compare_digest`), so response timing does
not tell how much of a guessed key was right. The key schemes are FastAPI security
classes, so /docs shows them and its "Authorize" button sends them.
"""

from __future__ import annotations

import hmac

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ui.errors import ApiError

# A key a person can guess or brute-force over HTTP is no key: shorter ones keep the API off.
MIN_ADMIN_KEY_CHARS = 16
ADMIN_OFF = "管理接口未启用：请在服务端设置 POLICYQA_ADMIN_API_KEY 后重启。"
ADMIN_KEY_SHORT = (
    f"管理接口未启用：POLICYQA_ADMIN_API_KEY 过短（至少 {MIN_ADMIN_KEY_CHARS} 个字符），请更换后重启。"
)
ADMIN_KEY_WRONG = "管理密钥缺失或错误（请使用 Authorization: Bearer <密钥> 或 X-API-Key 请求头）。"
OPENAI_KEY_WRONG = "Incorrect or missing API key (Authorization: Bearer <key>)."

bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer <key>")
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="管理密钥 / admin key")


def keys_match(given: str | None, expected: str) -> bool:
    """`given == expected`, in time that does not depend on where they differ."""
    return hmac.compare_digest((given or "").encode("utf-8"), expected.encode("utf-8"))


def admin_key_problem(expected: str | None) -> str | None:
    """Why the admin API is off with this configured key, or None when it is on."""
    if not expected:
        return ADMIN_OFF
    if len(expected) < MIN_ADMIN_KEY_CHARS:
        return ADMIN_KEY_SHORT
    return None


async def require_admin(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None = Security(bearer_scheme),
    api_key: str | None = Security(api_key_scheme),
) -> None:
    """The admin key, as `X-API-Key` or `Authorization: Bearer`.

    :raises ApiError: 503 while no admin key (or one too short) is configured, 401 for a
        wrong or missing one.
    """
    expected = request.app.state.settings.service.admin_api_key
    if problem := admin_key_problem(expected):
        raise ApiError(503, "admin_disabled", problem)
    given = api_key if api_key is not None else (bearer.credentials if bearer else None)
    if not keys_match(given, expected):
        raise ApiError(401, "unauthorized", ADMIN_KEY_WRONG)


async def check_admin_before_body(request: Request) -> None:
    """`require_admin` for a request whose body FastAPI has not read yet (it reads bodies
    before it solves dependencies): an upload without the key is refused unread."""
    await require_admin(request, await bearer_scheme(request), await api_key_scheme(request))


class OpenAIKeyError(Exception):
    """A /v1 request without the configured key; answered in OpenAI's error shape."""


async def require_openai_key(
    request: Request, bearer: HTTPAuthorizationCredentials | None = Security(bearer_scheme)
) -> None:
    """`Authorization: Bearer <settings.service.openai_api_key>`, when that key is set.

    :raises OpenAIKeyError: for a wrong or missing key.
    """
    expected = request.app.state.settings.service.openai_api_key
    if expected and not keys_match(bearer.credentials if bearer else None, expected):
        raise OpenAIKeyError(OPENAI_KEY_WRONG)
