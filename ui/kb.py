"""Managing the knowledge base while the service runs: the admin API and the rebuild manager.

    POST   /api/documents        upload a document (multipart: file + optional metadata)
    DELETE /api/documents/{id}   remove a document (its original is kept aside)
    POST   /api/documents/{id}/supersede   mark a document superseded (by another one)
    POST   /api/reindex          rebuild the index from the corpus folder
    GET    /api/reindex          where rebuilding stands (also in /readyz under "rebuild")

Admin routes need `settings.service.admin_api_key` (`Authorization: Bearer <key>` or `X-API-Key`)
and are off (503) while no key, or one shorter than `MIN_ADMIN_KEY_CHARS`, is configured
(`ui.deps.require_admin`). The key is checked before the request body is read
(`AdminRoute`), so nothing of an upload without the key is received. The knowledge-base page
(`ui.admin`) makes its changes through the same functions (`store_upload`, `remove`,
`supersede`), so both answer alike.

Every change is followed by a background rebuild (`RebuildManager`): one at a time, and a
request arriving during a rebuild queues exactly one more, which will include it. Each
rebuild builds a new index version beside the serving one, loads it into a new `Assistant`,
publishes it on disk and only then assigns `app.state.assistant` once. Until that moment
every question is answered from the previous index; if the rebuild fails, it stays. Other
replicas serving the same index directory pick the published build up (`ui.reload`).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from corpus.library import (
    AddedDocument,
    DuplicateDocumentError,
    Library,
    LibraryError,
    remove_abandoned_upload_folders,
    upload_temp_folder,
)
from corpus.models import Document
from corpus.settings import Settings
from ui.audit import AdminAudit, AuditLog
from ui.deps import MIN_ADMIN_KEY_CHARS, check_admin_before_body, require_admin
from ui.errors import error_body, error_responses
from ui.schemas import SupersedeRequest, UploadForm, document_summary

if TYPE_CHECKING:
    from qa import Assistant

log = logging.getLogger("policyqa.kb")

UPLOAD_PATH = "/api/documents"
# Multipart framing and the metadata fields around the file; the file itself is checked
# against settings.corpus.max_document_bytes exactly while it is read.
UPLOAD_OVERHEAD_BYTES = 256 * 1024
_READ_BLOCK = 1 << 20
DOCUMENT_NOT_FOUND = "未找到该文档。可用的文档见 GET /api/documents。"
REPLACED_NOT_FOUND = "未找到要替代的文档。可用的文档见 GET /api/documents。"
STATUS_FOR_CODE = {
    "not_found": 404,
    "invalid": 422,
    "unsupported": 415,
    "too_large": 413,
    "conflict": 409,
    "duplicate": 409,
}


# --- the rebuild manager ------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildOutcome:
    """One finished rebuild (or its failure, with `error`)."""

    finished_at: str
    seconds: float
    version: str | None = None
    documents: int | None = None
    chunks: int | None = None
    embedded: int | None = None  # passages embedded now; the rest came from the cache
    cached: int | None = None
    skipped_files: tuple[str, ...] = ()  # corpus files that did not load (messages)
    error: str | None = None


@dataclass(frozen=True)
class RebuildStatus:
    """Where rebuilding stands. A change is live once `applied` >= the ticket its request got."""

    running: bool
    queued: bool
    requested: int  # tickets handed out so far
    applied: int  # the highest ticket whose changes are in the serving index
    last: BuildOutcome | None
    started_at: str | None = None  # when the running rebuild began (ISO 8601, UTC)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RebuildManager:
    """Rebuilds the index in a background thread, one at a time, and hands each new
    assistant to `on_ready` only when it is complete and loaded.

    `build` turns settings into a loaded `Assistant` plus a `BuildOutcome`; the default
    reads the corpus through `Library`, builds a staged index version, loads it and
    publishes it to settings.index.index_dir.
    """

    def __init__(
        self,
        settings: Settings,
        on_ready: Callable[["Assistant"], None],
        build: Callable[[Settings], tuple["Assistant", BuildOutcome]] | None = None,
    ) -> None:
        self.settings = settings
        self._on_ready = on_ready
        self._build = build or build_and_publish
        self._lock = threading.Lock()
        self._running = False
        self._queued = False
        self._requested = 0
        self._applied = 0
        self._last: BuildOutcome | None = None
        self._started_at: str | None = None

    def request(self) -> int:
        """Asks for a rebuild that will include every change made before this call; returns
        its ticket. Starts one now, or queues one (at most one) behind the running one."""
        with self._lock:
            self._requested += 1
            ticket = self._requested
            if self._running:
                self._queued = True
            else:
                self._running = True
                threading.Thread(target=self._run, name="policyqa-rebuild", daemon=True).start()
        return ticket

    def status(self) -> RebuildStatus:
        with self._lock:
            return RebuildStatus(self._running, self._queued, self._requested, self._applied,
                                 self._last, self._started_at if self._running else None)

    def _run(self) -> None:
        while True:
            with self._lock:
                covers = self._requested  # changes made before now are on disk already
                self._queued = False
                self._started_at = _now()
            started = time.perf_counter()
            try:
                assistant, outcome = self._build(self.settings)
                self._on_ready(assistant)
            except Exception as error:  # the serving index stays; the status says why
                log.exception("rebuild failed; still serving the previous index")
                outcome = BuildOutcome(
                    finished_at=_now(),
                    seconds=round(time.perf_counter() - started, 2),
                    error=f"重建索引失败，仍使用原索引：{_describe(error)}",
                )
            else:
                log.info("index %s live after %.1f s", outcome.version, outcome.seconds)
            with self._lock:
                self._last = outcome
                if outcome.error is None:
                    self._applied = max(self._applied, covers)
                if not self._queued:
                    self._running = False
                    return


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _describe(error: Exception) -> str:
    text = str(error).strip()
    return text if text and not text.isascii() else f"{type(error).__name__}: {text}"[:300]


def build_and_publish(settings: Settings) -> tuple["Assistant", BuildOutcome]:
    """Reads the corpus, builds a new index version beside the serving one (embedding only
    passages missing from the cache), loads it into a new Assistant, then publishes it to
    settings.index.index_dir. Nothing on disk changes when any step before publishing fails."""
    from index.rebuild import build_staged, publish
    from qa import Assistant

    started = time.perf_counter()
    loaded = Library(settings).load()
    staged = build_staged(settings, loaded.documents)
    assistant = Assistant.over(staged.index, settings)
    publish(staged, settings)
    report = staged.report
    return assistant, BuildOutcome(
        finished_at=_now(),
        seconds=round(time.perf_counter() - started, 2),
        version=report.version,
        documents=report.documents,
        chunks=report.chunks,
        embedded=report.embedded,
        cached=report.cached,
        skipped_files=tuple(error.message for error in loaded.errors),
    )


def install(app: FastAPI, settings: Settings) -> None:
    """Gives `app` its rebuild manager (`app.state.rebuild`), whose new assistants replace
    `app.state.assistant` in one assignment under `app.state.assistant_lock` (which
    `ui.reload.IndexWatcher` holds for the builds of other processes), and its audit log of
    admin requests (`app.state.audit`), and removes the upload folders of processes that
    died mid-upload."""
    app.state.assistant_lock = threading.Lock()

    def go_live(assistant: "Assistant") -> None:
        with app.state.assistant_lock:
            app.state.assistant = assistant

    app.state.rebuild = RebuildManager(settings, on_ready=go_live)
    # Every admin request, refused ones too, goes to the audit log (ui.audit).
    app.state.audit = AuditLog.for_settings(settings)
    app.add_middleware(AdminAudit, log=app.state.audit, routes=router.routes)
    if removed := remove_abandoned_upload_folders():
        log.info("removed %d upload folder(s) left by processes that died mid-upload", removed)
    if settings.service.admin_api_key and len(settings.service.admin_api_key) < MIN_ADMIN_KEY_CHARS:
        log.error("admin API off: POLICYQA_ADMIN_API_KEY is shorter than %d characters",
                  MIN_ADMIN_KEY_CHARS)


def _document_state(documents: Sequence[Document]) -> dict[str, dict]:
    # The text is compared by its hash.
    return {document.doc_id: document.model_dump(exclude={"text"}) for document in documents}


def corpus_differs_from(indexed: Sequence[Document], settings: Settings) -> bool:
    """Whether the corpus folder and catalogue now hold other documents (or other text or
    metadata) than `indexed`, the documents of the serving index."""
    loaded = Library(settings).load()
    return _document_state(loaded.documents) != _document_state(indexed)


def rebuild_if_corpus_changed(app: FastAPI) -> int | None:
    """At start-up: when the corpus differs from the serving index (a document stored and
    acknowledged just before a crash, before its rebuild finished; a `policyqa add
    --no-build`), asks for a rebuild, which /readyz then shows. Returns its ticket, or None
    when the index is current or none is loaded."""
    assistant = app.state.assistant
    if assistant is None or not corpus_differs_from(assistant.documents, app.state.settings):
        return None
    log.warning("the corpus changed since the index was built: rebuilding in the background")
    return app.state.rebuild.request()


def rebuild_fields(app: FastAPI) -> dict[str, Any]:
    """What /readyz adds about rebuilding: {"rebuild": status} when the app has a manager."""
    manager = getattr(app.state, "rebuild", None)
    return {"rebuild": manager.status().to_dict()} if manager is not None else {}


# --- the admin API ------------------------------------------------------------------------------


class AdminRoute(APIRoute):
    """A route that checks the admin key before FastAPI reads and parses the request body
    (FastAPI reads it before solving `Depends`): an upload without the key is refused before
    any of it is received, and a request missing its form fields gets 401, not 422."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_if_admin(request: Request) -> Response:
            await check_admin_before_body(request)
            return await handle(request)

        return handle_if_admin


router = APIRouter(
    tags=["知识库管理 Knowledge base"], route_class=AdminRoute, dependencies=[Depends(require_admin)]
)

ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "管理密钥缺失或错误 / wrong or missing admin key"},
    503: {"description": "管理接口未启用 / admin API off (no key configured)"},
}


def _manager(request: Request) -> RebuildManager:
    return request.app.state.rebuild


def _library(request: Request) -> Library:
    return Library(request.app.state.settings)


def _library_error(error: LibraryError, not_found: str = DOCUMENT_NOT_FOUND) -> JSONResponse:
    # An unknown id is the client's input: the library's message names it, the API does not.
    body = error_body(error.code, not_found if error.code == "not_found" else error.message)
    if isinstance(error, DuplicateDocumentError):
        body["duplicate_of"] = error.doc_id
    return JSONResponse(body, status_code=STATUS_FOR_CODE.get(error.code, 422))


def _rebuild_reply(manager: RebuildManager, ticket: int) -> dict[str, Any]:
    return {"ticket": ticket, "rebuild": manager.status().to_dict()}


def _receive_upload(upload: UploadFile, folder: Path, limit: int) -> Path:
    """Copies the uploaded file into `folder`, stopping as soon as it exceeds `limit` bytes.

    :raises LibraryError: ("too_large") over the limit.
    """
    target = folder / f"upload{Path(upload.filename or '').suffix.lower()}"
    received = 0
    with open(target, "wb") as stream:
        while block := upload.file.read(_READ_BLOCK):
            received += len(block)
            if received > limit:
                raise LibraryError("too_large", f"文件超过大小上限（{limit / 1024 / 1024:g} MB）。")
            stream.write(block)
    return target


def _replaced(added: AddedDocument) -> dict[str, Any] | None:
    if not added.replaced_doc_id:
        return None
    return {"doc_id": added.replaced_doc_id, "action": added.replaced_action}


def store_upload(
    settings: Settings, manager: RebuildManager, source: Path, original_name: str, form: UploadForm
) -> dict[str, Any]:
    """Stores the file at `source` as a new document with the metadata of `form` (replacing
    `form.replaces` if given) and asks for a rebuild; returns what POST /api/documents
    answers.

    :raises LibraryError: the file or the metadata is refused; nothing changed.
    """
    added = Library(settings).add(
        source, form, original_name=original_name, replaces=form.replaces,
        remove_replaced=form.remove_replaced,
    )
    summary = document_summary(added.document).model_dump(mode="json")
    return {"document": summary, "replaced": _replaced(added),
            **_rebuild_reply(manager, manager.request())}


def remove(settings: Settings, manager: RebuildManager, doc_id: str) -> dict[str, Any]:
    """Takes `doc_id` out and asks for a rebuild; returns what DELETE answers.

    :raises LibraryError: unknown, or one part of a file of several documents.
    """
    removed = Library(settings).remove(doc_id)
    return {"removed": asdict(removed), **_rebuild_reply(manager, manager.request())}


def supersede(
    settings: Settings, manager: RebuildManager, doc_id: str, by: str | None = None
) -> dict[str, Any]:
    """Marks `doc_id` superseded (by `by`) and asks for a rebuild.

    :raises LibraryError: an unknown document.
    """
    Library(settings).mark_superseded(doc_id, by)
    return {"superseded": {"doc_id": doc_id, "by": by}, **_rebuild_reply(manager, manager.request())}


@router.post(
    UPLOAD_PATH,
    status_code=201,
    form_limits={"max_files": 1, "max_fields": 20, "max_part_size": 4096},
    responses={**ADMIN_RESPONSES, 409: {"description": "重复文件 / duplicate"},
               413: {"description": "文件过大"}, 415: {"description": "不支持的类型"},
               422: {"description": "文件无法读取"}, **error_responses(404, 408, s404="要替代的文档不存在 / replaced document unknown")},
    # What a client sends: a file part with a filename (its suffix picks the reader).
    openapi_extra={"requestBody": {"content": {"multipart/form-data": {"encoding": {"file": {
        "contentType": "text/plain", "headers": {"Content-Disposition": {
            "schema": {"type": "string"}, "example": 'form-data; name="file"; filename="policy.txt"'}},
    }}}}}},
    summary="上传文档 / Add a document",
)
def upload_document(
    request: Request,
    form: Annotated[UploadForm, Form()],
    file: UploadFile = File(description="txt / md / pdf / docx"),
) -> Any:
    """Store a new policy document (the original file, unchanged) and rebuild the index in
    the background. Metadata the form leaves out is read from the document (title, 文号,
    dates). With `replaces`, the old document is marked superseded, or removed with
    `remove_replaced`. Answers 201 with the document and a rebuild `ticket`: the document
    is searchable once /readyz's `rebuild.applied` reaches it."""
    settings: Settings = request.app.state.settings
    folder = upload_temp_folder()
    try:
        received = _receive_upload(file, folder, settings.corpus.max_document_bytes)
        reply = store_upload(
            settings, _manager(request), received, Path(file.filename or "upload").name, form
        )
    except LibraryError as error:
        return _library_error(error, not_found=REPLACED_NOT_FOUND)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return JSONResponse(reply, status_code=201)


@router.delete(
    UPLOAD_PATH + "/{doc_id}",
    responses={**ADMIN_RESPONSES, 404: {"description": "未知文档"}, 409: {"description": "不能单独删除"}},
    summary="删除文档 / Remove a document",
)
def remove_document(doc_id: str, request: Request) -> Any:
    """Take a document out of the knowledge base (its original is kept in the corpus
    folder's .removed/) and rebuild the index in the background."""
    try:
        return remove(request.app.state.settings, _manager(request), doc_id)
    except LibraryError as error:
        return _library_error(error)


@router.post(
    UPLOAD_PATH + "/{doc_id}/supersede",
    responses={**ADMIN_RESPONSES, 404: {"description": "未知文档"}, **error_responses(400, 408, 413)},
    summary="标记为已替代 / Mark a document superseded",
)
def supersede_document(doc_id: str, request: Request, body: SupersedeRequest | None = None) -> Any:
    """Flag a document as superseded, by another one (`by`) or not: it stays searchable,
    its citations say so, and in-force-only answers leave it out. Rebuilds in the
    background."""
    try:
        return supersede(request.app.state.settings, _manager(request), doc_id,
                         body.by if body else None)
    except LibraryError as error:
        return _library_error(error)


@router.post(
    "/api/reindex",
    status_code=202,
    responses=ADMIN_RESPONSES,
    summary="重建索引 / Rebuild the index",
)
def reindex(request: Request) -> Any:
    """Rebuild the index from the corpus folder in the background (e.g. after `policyqa
    add --no-build`). The service answers from the current index until the new one is
    loaded. Answers 202 with a `ticket`."""
    manager = _manager(request)
    ticket = manager.request()
    return JSONResponse(_rebuild_reply(manager, ticket), status_code=202)


@router.get("/api/reindex", responses=ADMIN_RESPONSES, summary="重建状态 / Rebuild status")
def reindex_status(request: Request) -> Any:
    """Whether a rebuild is running or queued, and how the last one went."""
    return {"rebuild": _manager(request).status().to_dict()}
