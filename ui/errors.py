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
from starlette.exceptions import HTTPException as StarletteHTTPException

from qa.errors import QuestionError

log = logging.getLogger("policyqa.app")

GENERIC_500 = "服务器内部错误，请稍后再试。"

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
}

FIELD_NAMES = {
    "question": "问题",
    "history": "历史问题",
    "documents": "文档筛选",
    "rating": "评价",
    "answer": "答案",
    "comment": "备注",
    "answer_id": "答案编号",
}
# QuestionErrors whose message names the input (unknown document ids): answered with these.
QUESTION_MESSAGES_WITHOUT_INPUT = {
    "unknown_document": "文档筛选中有未知的文档编号。可用的文档见 GET /api/documents。",
}


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


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(QuestionError, _on_question_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
