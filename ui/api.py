"""The JSON API: /api/ask, /api/documents, /api/feedback, /healthz, /readyz.

The assistant is read from `request.app.state.assistant` on every request, never kept
elsewhere, so a rebuilt index can be swapped in by assigning that one attribute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from corpus.settings import Settings
from ui.errors import ApiError, error_responses
from ui.kb import rebuild_fields
from ui.reload import reload_fields
from ui.schemas import (
    AskRequest,
    AskResponse,
    DocumentOutline,
    DocumentSummary,
    ErrorResponse,
    FeedbackRequest,
    FeedbackStored,
    Readiness,
    SectionOut,
    document_summary,
)

if TYPE_CHECKING:
    from qa import Assistant

router = APIRouter()

NOT_READY = "索引尚未加载，请稍后再试。"
# Which index version answered (as /readyz `index_version`): clients and eval.bench_load
# can tell answers of a rebuilt index from those of the previous one.
INDEX_VERSION_HEADER = "X-Index-Version"
ANSWER_NOT_FOUND = "未找到该答案（答案编号无效或已过期），请重新提问后再评价。"
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "请求体过大 / body too large"},
    422: {"model": ErrorResponse, "description": "输入有误 / invalid input"},
    503: {"model": ErrorResponse, "description": "索引未加载 / index not loaded"},
}


def current_assistant(request: Request) -> "Assistant":
    """The assistant serving now.

    :raises ApiError: 503 while no index is loaded.
    """
    assistant = getattr(request.app.state, "assistant", None)
    if assistant is None:
        raise ApiError(503, "not_ready", NOT_READY)
    return assistant


def _settings(request: Request) -> Settings:
    return request.app.state.settings


@router.post(
    "/api/ask",
    response_model=AskResponse,
    responses={**ERROR_RESPONSES, **error_responses(400, 408, 429)},
    summary="提问 / Ask a question",
    tags=["问答 QA"],
)
def ask(body: AskRequest, request: Request, response: Response) -> AskResponse:
    """Answer a question by quoting the documents, with citations. When the documents do not
    answer it, `answered` is false, `answer` says so in Chinese and `passages` still lists the
    closest passages."""
    settings = _settings(request)
    if settings.service.log_questions:
        request.state.question = body.question
    # Input limits and unknown documents are the assistant's to refuse (QuestionError → 422,
    # before any retrieval); over-large bodies never get here (BodySizeLimit → 413).
    assistant = current_assistant(request)  # one index version answers the whole question
    answer = assistant.ask(
        body.question,
        body.history,
        top_k=body.top_k,
        documents=body.documents,
        in_force_only=body.in_force_only,
    ).to_dict()
    answer_id = request.app.state.issued_answers.issue(body.question, body.history, answer)
    # An assistant without an index (a test's fixed-answer fake) has no version to name.
    version = getattr(getattr(assistant, "index", None), "version", None)
    if version:
        response.headers[INDEX_VERSION_HEADER] = version
    return AskResponse(**answer, answer_id=answer_id)


@router.get(
    "/api/documents",
    response_model=list[DocumentSummary],
    responses={503: ERROR_RESPONSES[503]},
    summary="文档列表 / List documents",
    tags=["文档 Documents"],
)
def list_documents(request: Request) -> list[DocumentSummary]:
    """The documents in the loaded index."""
    return [document_summary(document) for document in current_assistant(request).documents]


@router.get(
    "/api/documents/{doc_id}",
    response_model=DocumentOutline,
    responses={404: {"model": ErrorResponse, "description": "未知文档"}, 503: ERROR_RESPONSES[503]},
    summary="文档目录 / Document outline",
    tags=["文档 Documents"],
)
def document_outline(doc_id: str, request: Request) -> DocumentOutline:
    """One document's metadata and its section outline (a flat list in document order;
    `level` gives the nesting)."""
    for document in current_assistant(request).documents:
        if document.doc_id == doc_id:
            outline = [
                SectionOut(path=list(section.path), level=section.level)
                for section in document.sections
            ]
            return DocumentOutline(**document_summary(document).model_dump(), outline=outline)
    raise ApiError(404, "unknown_document", "未找到该文档。可用的文档见 GET /api/documents。")


@router.post(
    "/api/feedback",
    response_model=FeedbackStored,
    status_code=201,
    responses={
        404: {"model": ErrorResponse, "description": "未知或过期的答案编号"},
        422: ERROR_RESPONSES[422],
        **error_responses(400, 408, 413),
    },
    summary="评价答案 / Rate an answer",
    tags=["问答 QA"],
)
def give_feedback(body: FeedbackRequest, request: Request) -> dict:
    """Store a thumbs up or down on an answer returned by /api/ask, named by its `answer_id`
    (`policyqa feedback` lists them). What is stored is the answer and question as the
    server issued them, never text sent here."""
    issued = request.app.state.issued_answers.get(body.answer_id)
    if issued is None:
        raise ApiError(404, "unknown_answer", ANSWER_NOT_FOUND, "answer_id")
    item = request.app.state.feedback.add(
        rating=body.rating,
        question=issued.question,
        answer=issued.answer,
        history=issued.history,
        comment=body.comment,
        source="api",
        answer_id=body.answer_id,
    )
    return {"id": item.id}


@router.get("/healthz", summary="存活检查 / Liveness", tags=["运维 Ops"])
def healthz() -> dict:
    """200 while the process serves requests, index loaded or not."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "索引未加载"}},
    summary="就绪检查 / Readiness",
    tags=["运维 Ops"],
)
def readyz(request: Request) -> Any:
    """200 with what the loaded index was built from; 503 while no index is loaded. Either
    way it adds where rebuilding stands and a published build that did not load."""
    assistant = getattr(request.app.state, "assistant", None)
    builds = {**rebuild_fields(request.app), **reload_fields(request.app)}
    if assistant is None:
        return JSONResponse(
            {"status": "not_ready", "message": NOT_READY, **builds}, status_code=503
        )
    return {**readiness(assistant), **builds}


def readiness(assistant: "Assistant") -> dict:
    """What /readyz reports about the loaded index, from its manifest."""
    index = assistant.index
    manifest = index.manifest
    return {
        "status": "ready",
        "embedder": manifest.get("embedder"),
        "corpus_fingerprint": manifest.get("corpus_fingerprint"),
        "index_version": index.version,
        "chunks": manifest.get("counts", {}).get("chunks", len(index.chunks)),
        "documents": len(assistant.documents),
    }
