"""Exception handlers: every error becomes `ErrorResponse` JSON with a Chinese message.

FastAPI's default 422 handler echoes the submitted input back, which leaks it into logs and
clients and turns into a 500 when the input cannot be serialised (a lone surrogate "\\ud800",
or 1e999 parsed as infinity). These handlers never include the input.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from corpus.models import FIELD_LABELS
from qa.errors import QuestionError

log = logging.getLogger("policyqa.app")

GENERIC_500 = "服务器内部错误，请稍后再试。"
NO_SUCH_API = "没有这个接口。可用的接口见 /docs。"
BLANK_QUESTION = "问题不能为空，请输入您想了解的政策问题。"

HTTP_STATUS_MESSAGES = {
    400: "请求无效。",
    401: "需要身份验证。",
    403: "没有权限。",
    404: "未找到请求的地址。",
    405: "不支持该请求方法。",
    408: "请求超时，请重试。",
    413: "请求体过大。",
    415: "不支持的内容类型，请使用 application/json。",
    429: "请求过于频繁，请稍后再试。",
    503: "服务暂不可用，请稍后再试。",
}

# pydantic error type -> Chinese message; `{...}` placeholders come from the error's ctx,
# which holds limits (never the input).
VALIDATION_MESSAGES = {
    "missing": "缺少必填字段。",
    "string_type": "应为字符串。",
    "int_type": "应为整数。",
    "int_parsing": "应为整数。",
    "int_from_float": "应为整数。",
    "finite_number": "应为有限的数字。",
    "float_type": "应为数字。",
    "float_parsing": "应为数字。",
    "bool_type": "应为布尔值 true 或 false。",
    "bool_parsing": "应为布尔值 true 或 false。",
    "list_type": "应为字符串列表。",
    "dict_type": "应为 JSON 对象。",
    "model_type": "请求体应为 JSON 对象。",
    "model_attributes_type": "请求体应为 JSON 对象。",
    "extra_forbidden": "包含不支持的字段。",
    "greater_than_equal": "不能小于 {ge}。",
    "less_than_equal": "不能大于 {le}。",
    "greater_than": "必须大于 {gt}。",
    "less_than": "必须小于 {lt}。",
    "too_long": "最多 {max_length} 项。",
    "too_short": "至少 {min_length} 项。",
    "string_too_long": "最多 {max_length} 个字符。",
    "string_too_short": "至少 {min_length} 个字符。",
    "string_pattern_mismatch": "取值不在允许范围内。",
    "json_invalid": "请求体不是有效的 JSON。",
    "json_type": "请求体不是有效的 JSON。",
    "string_unicode": "包含无法识别的字符。",
    "enum": "取值不在允许范围内（可选：{expected}）。",
}

FIELD_NAMES = {
    "question": "问题",
    "history": "历史问题",
    "documents": "文档筛选",
    "rating": "评价",
    "answer": "答案",
    "comment": "备注",
    "answer_id": "答案编号",
    **FIELD_LABELS,  # document metadata: the upload form
}
# QuestionErrors whose message names the input (unknown document ids): answered with these.
QUESTION_MESSAGES_WITHOUT_INPUT = {
    "unknown_document": "文档筛选中有未知的文档编号。可用的文档见 GET /api/documents。",
}


# What each error status means where an operation declares it (`responses=`), so that the
# OpenAPI schema lists every status an operation answers (schemathesis checks it).
ERROR_DESCRIPTIONS = {
    400: "请求无效 / bad request",
    401: "密钥缺失或错误 / wrong or missing key",
    403: "签名校验失败或请求已过期 / bad signature, stale or replayed callback",
    404: "未找到 / not found",
    408: "请求体发送超时 / body sent too slowly",
    409: "冲突 / conflict",
    413: "请求体过大 / body too large",
    415: "不支持的类型 / unsupported type",
    422: "输入有误 / invalid input",
    429: "请求过于频繁，见 Retry-After / rate limited, see Retry-After",
    503: "服务未就绪或未配置 / not ready or not configured",
}


def error_responses(
    *statuses: int, model: Any = "envelope", media_type: str | None = None, **descriptions: str
) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route answering `statuses` besides its success: the error JSON
    (`ErrorResponse`) with `ERROR_DESCRIPTIONS`' text; `model=None` for routes that answer
    in another shape, with `media_type` (a string body) if not JSON: the bots' text/plain,
    /v1's OpenAI errors. `descriptions` override the text per status, keyed `s404=...`."""
    if model == "envelope":
        from ui.schemas import ErrorResponse  # here, not at import: ui.schemas imports corpus

        model = ErrorResponse
    declared: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "description": descriptions.get(f"s{status}", ERROR_DESCRIPTIONS[status])
        }
        if model is not None:
            entry["model"] = model
        elif media_type is not None:
            entry["content"] = {media_type: {"schema": {"type": "string"}}}
        declared[status] = entry
    return declared


def inline_schema(model: Any) -> dict[str, Any]:
    """`model`'s JSON schema with its `$defs` written in place, for an `openapi_extra`
    request body (whose `$ref`s would otherwise point into the wrong document)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)


class ApiError(Exception):
    """An error we answer on purpose: HTTP status, machine code and Chinese message."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def error_body(code: str, message: str, details: Sequence[dict[str, str]] = ()) -> dict:
    return {"error": code, "message": message, "details": list(details)}


def error_response(
    status: int, code: str, message: str, details: Sequence[dict[str, str]] = ()
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status)


def _field_of(location: Sequence[Any]) -> str:
    parts = [str(part) for part in location if part != "body"]
    return ".".join(parts) if parts else "body"


def _validation_message(error: dict) -> str:
    if error.get("type") == "value_error" and "surrogate" in str(error.get("msg", "")):
        return "包含无效的字符（孤立的 UTF-16 代理项）。"
    location = tuple(error.get("loc", ()))
    if error.get("type") == "string_pattern_mismatch" and location[-1:] == ("question",):
        return BLANK_QUESTION  # the schema's "not blank" pattern
    template = VALIDATION_MESSAGES.get(error.get("type", ""), "取值无效。")
    context = {key: value for key, value in (error.get("ctx") or {}).items()}
    try:
        return template.format(**context)
    except (KeyError, IndexError, ValueError):
        return template.split("{")[0] or "取值无效。"


def _field_label(field: str) -> str:
    name = FIELD_NAMES.get(field.split(".")[0], field)
    return field if name == field else f"{name}（{field}）"


def describe_validation_errors(errors: Sequence[dict]) -> tuple[str, list[dict[str, str]]]:
    """A one-line Chinese summary and per-field details, built without the input values."""
    details = []
    for error in errors[:10]:
        # An unknown key and a JSON syntax error's position are input, not field names.
        at_body = error.get("type") in ("json_invalid", "json_type", "extra_forbidden")
        field = "body" if at_body else _field_of(error.get("loc", ()))
        details.append({"field": field, "message": _validation_message(error)})
    if any(error.get("type") in ("json_invalid", "json_type") for error in errors):
        return "请求体不是有效的 JSON。", details
    summary = "；".join(f"{_field_label(d['field'])}：{d['message']}" for d in details[:3])
    return f"请求参数有误：{summary}", details


async def _on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    message, details = describe_validation_errors(error.errors())
    code = "invalid_json" if message.startswith("请求体不是") else "invalid_request"
    return error_response(422, code, message, details)


async def _on_api_error(request: Request, error: ApiError) -> JSONResponse:
    details = [{"field": error.field, "message": error.message}] if error.field else []
    return error_response(error.status, error.code, error.message, details)


async def _on_question_error(request: Request, error: QuestionError) -> JSONResponse:
    message = QUESTION_MESSAGES_WITHOUT_INPUT.get(error.code, error.message)
    details = [{"field": error.field, "message": message}] if error.field else []
    return error_response(422, error.code, message, details)


async def _on_http_exception(request: Request, error: StarletteHTTPException) -> JSONResponse:
    detail = error.detail
    # Our own HTTPExceptions carry Chinese text; framework ones carry English phrases.
    message = detail if isinstance(detail, str) and not detail.isascii() else None
    message = message or HTTP_STATUS_MESSAGES.get(error.status_code, "请求无法处理。")
    response = error_response(error.status_code, f"http_{error.status_code}", message)
    for name, value in (error.headers or {}).items():
        response.headers[name] = value
    return response


async def _on_unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", GENERIC_500)


def route_for(routes: Sequence[BaseRoute], scope: Scope) -> tuple[bool, set[str]]:
    """Whether some route in `routes` (looking inside mounted apps) serves the request in
    `scope`, and, when none does, the methods of the routes whose path matches."""
    allowed: set[str] = set()
    # FastAPI keeps an included router as one route; iter_route_contexts unfolds it.
    for route in iter_route_contexts(routes):
        match, child_scope = route.matches(scope)
        if match is Match.NONE:
            continue
        mount = route.original_route
        if isinstance(mount, Mount):
            if not mount.routes:  # a mounted app that routes by itself (static files)
                return True, set()
            served, methods = route_for(mount.routes, {**scope, **child_scope})
            if served:
                return True, set()
            allowed |= methods
        elif match is Match.FULL:
            return True, set()
        else:
            allowed |= set(getattr(route, "methods", None) or ())
    return False, allowed


class UnroutedRequests:
    """ASGI middleware: the error JSON for a path no route serves (404) and for a method
    the path does not offer (405, with `Allow`), before the request reaches the chat page
    mounted at "/", which would otherwise answer either with Starlette's English 404."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            routes = scope["app"].router.routes  # the FastAPI app, set by Starlette.__call__
            served, allowed = route_for(routes, scope)
            path = scope["path"]
            # The router redirects "/x/" to "/x" (and back) when only that one is routed.
            toggled = path.rstrip("/") if path.endswith("/") else path + "/"
            if not served and not (toggled and route_for(routes, {**scope, "path": toggled})[0]):
                if allowed:
                    response = error_response(405, "http_405", HTTP_STATUS_MESSAGES[405])
                    response.headers["Allow"] = ", ".join(sorted(allowed))
                elif path.startswith(("/api/", "/v1/")):
                    response = error_response(404, "http_404", NO_SUCH_API)
                else:
                    response = error_response(404, "http_404", HTTP_STATUS_MESSAGES[404])
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(QuestionError, _on_question_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
