"""An OpenAI-compatible chat API (`/v1/chat/completions`, `/v1/models`), so bot frameworks
and OpenAI clients can use the assistant unchanged.

The last user message is the question and the earlier user messages are its history (the
assistant's own turns are not needed: answers are extracted from the documents). The reply's
content (`ui.render.render(answer, "openai")`) is the answer with its span in Markdown
**bold**, its confidence line ("置信度：高（0.93）"), then its citations as plain lines
"[1] 《title》 section"; the
structured answer (`Answer.to_dict()`) rides along in an extra `policy_qa` field, which
OpenAI clients ignore. `stream: true` sends server-sent events in OpenAI's
`chat.completion.chunk` format. Errors use OpenAI's shape
`{"error": {"message", "type", "code", "param"}}`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from corpus.settings import Settings
from qa.errors import QuestionError
from qa.models import Answer
from ui.deps import OpenAIKeyError, require_openai_key
from ui.errors import error_responses, inline_schema
from ui.render import render
from ui.schemas import has_lone_surrogate

MODEL_ID = "policy-qa"
_STREAM_PIECE = re.compile(r"[^。！？；!?;\n]*[。！？；!?;\n]*")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None

    @field_validator("text")
    @classmethod
    def _text_encodable(cls, value: str | None) -> str | None:
        return _reject_surrogates(value)


def _reject_surrogates(value: str | None) -> str | None:
    # A lone "\ud800" decodes from JSON but cannot be encoded again: the reply would fail.
    if value is not None and has_lone_surrogate(value):
        raise ValueError("contains a lone UTF-16 surrogate")
    return value


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[ContentPart] | None = None

    @field_validator("content")
    @classmethod
    def _content_encodable(cls, value: str | list[ContentPart] | None):
        return _reject_surrogates(value) if isinstance(value, str) else value

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    """The fields we read; OpenAI's others (temperature, max_tokens, ...) are accepted and
    ignored, since an extractive answer has nothing to sample."""

    model_config = ConfigDict(extra="allow")

    model: str = MODEL_ID
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False


def openai_error(status_code: int, message: str, error_type: str, code: str | None,
                 param: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status_code)


async def on_key_error(request: Request, error: OpenAIKeyError) -> JSONResponse:
    """A wrong or missing /v1 key (`ui.deps.require_openai_key`), in OpenAI's error shape."""
    return openai_error(401, str(error), "invalid_request_error", "invalid_api_key")


def split_for_streaming(content: str) -> list[str]:
    """`content` in sentence-sized pieces whose concatenation is `content`."""
    return [piece for piece in _STREAM_PIECE.findall(content) if piece]


class ChatCompletionBuilder:
    """Builds the response objects of one completion (they share id and timestamp)."""

    def __init__(self, answer: Answer):
        self.answer = answer
        self.content = render(answer, "openai")
        self.completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def completion(self) -> dict:
        return {
            "id": self.completion_id,
            "object": "chat.completion",
            "created": self.created,
            "model": MODEL_ID,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": self.content},
                "finish_reason": "stop",
            }],
            "policy_qa": self.answer.to_dict(),
        }

    def _chunk(self, delta: dict, finish_reason: str | None) -> dict:
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": MODEL_ID,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    def chunks(self) -> Iterator[dict]:
        """Role delta first, content deltas, then the finish chunk (carrying `policy_qa`)."""
        yield self._chunk({"role": "assistant", "content": ""}, None)
        for piece in split_for_streaming(self.content):
            yield self._chunk({"content": piece}, None)
        yield {**self._chunk({}, "stop"), "policy_qa": self.answer.to_dict()}

    def server_sent_events(self) -> Iterator[str]:
        for chunk in self.chunks():
            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"


def _validation_summary(error: ValidationError) -> str:
    first = error.errors(include_input=False)[0]
    location = ".".join(str(part) for part in first["loc"]) or "body"
    return f"Invalid request body: {location}: {first['msg']}"


def create_router(settings: Settings) -> APIRouter:
    """The `/v1` routes. When `settings.service.openai_api_key` is set, requests must carry it as
    `Authorization: Bearer <key>`. The assistant is read per request from
    `request.app.state.assistant`."""
    router = APIRouter(
        prefix="/v1", tags=["openai-compatible"], dependencies=[Depends(require_openai_key)]
    )
    max_history_turns = settings.qa.max_history_turns
    log_questions = settings.service.log_questions

    def model_object() -> dict:
        return {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "policy-qa"}

    @router.get("/models", responses=error_responses(401, 429, model=None))
    async def list_models() -> Response:
        return JSONResponse({"object": "list", "data": [model_object()]})

    @router.get("/models/{model_id}", responses=error_responses(401, 404, 429, model=None))
    async def retrieve_model(model_id: str) -> Response:
        if model_id != MODEL_ID:
            return openai_error(404, f"The model '{model_id}' does not exist.",
                                "invalid_request_error", "model_not_found", "model")
        return JSONResponse(model_object())

    @router.post(
        "/chat/completions",
        # The body is read by hand (to answer OpenAI-shaped 400s, not 422s): declare it.
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": inline_schema(ChatCompletionRequest)}}}},
        responses=error_responses(400, 401, 408, 413, 429, 503, model=None),
    )
    async def create_chat_completion(request: Request) -> Response:
        try:
            # The body is bounded (settings.service.max_openai_request_bytes) by ui.app's RequestBodyLimits.
            parsed = ChatCompletionRequest.model_validate(json.loads(await request.body()))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            # RecursionError: JSON nested deeper than the parser goes ("[[[[...").
            return openai_error(400, "Request body is not valid JSON.",
                                "invalid_request_error", "invalid_json")
        except ValidationError as error:
            return openai_error(400, _validation_summary(error), "invalid_request_error",
                                "invalid_request")

        questions = [message.text() for message in parsed.messages if message.role == "user"]
        if not questions:
            return openai_error(400, "messages must include a message with role 'user'.",
                                "invalid_request_error", "no_user_message", "messages")
        question = questions[-1]
        if log_questions:
            request.state.question = question
        history = questions[:-1][-max_history_turns:] if max_history_turns else []

        assistant = getattr(request.app.state, "assistant", None)
        if assistant is None:
            return openai_error(503, "知识库正在准备中，请稍后再试。", "server_error",
                                "index_not_ready")
        try:
            answer = await run_in_threadpool(assistant.ask, question, history)
        except QuestionError as error:
            return openai_error(400, error.message, "invalid_request_error", error.code,
                                "messages")

        builder = ChatCompletionBuilder(answer)
        if parsed.stream:
            return StreamingResponse(
                builder.server_sent_events(),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return JSONResponse(builder.completion())

    return router
