"""The audit log of admin actions: who changed the knowledge base, when, and how it went.

Every request to an admin route (upload, replace, remove, reindex; also refused ones, such
as a wrong or missing key) appends one row to a SQLite file (settings.service.audit_db, default
data_dir/audit.sqlite3): UTC time, client address, action, document id, HTTP status,
result ("ok" or the error code) and a short detail. Reading the rebuild status is not an
action and is recorded only when refused. The log never holds the admin key or any other
request header, nor the uploaded file. Rows cannot be changed or deleted through SQLite
(triggers refuse it); `policyqa audit` prints them.

`AdminAudit` records the HTTP admin API without the route handlers knowing; other admin
surfaces call `AuditLog.record` themselves: the Gradio admin page, e.g.
`app.state.audit.record("remove", doc_id, "ok", client=request.client.host)`, and the
knowledge-base commands of the CLI (`policyqa add`, `policyqa remove`), whose client is
`cli_client()`, "cli:<user>@<host>", and whose entries have no HTTP status.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import socket
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corpus.settings import Settings

log = logging.getLogger("policyqa.audit")

AUDIT_FILE = "audit.sqlite3"
_DETAIL_CHARS = 300
_CAPTURED_BODY_BYTES = 64 * 1024  # admin answers are small JSON; larger ones are not parsed
# Route endpoint names of ui.kb -> the action recorded; other admin routes record their name.
ACTIONS: Mapping[str, str] = {
    "upload_document": "upload",
    "remove_document": "remove",
    "supersede_document": "supersede",
    "reindex": "reindex",
    "reindex_status": "reindex_status",
}

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        client TEXT,
        action TEXT NOT NULL,
        doc_id TEXT,
        status INTEGER,
        result TEXT NOT NULL,
        detail TEXT
    )""",
    # Append-only: an entry, once written, is evidence.
    """CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
)


@dataclass(frozen=True)
class AuditEntry:
    id: int
    time: str  # ISO 8601, UTC
    client: str | None  # the client address as the server saw it, or "cli:<user>@<host>"
    action: str  # "upload", "replace", "remove", "reindex", ...
    doc_id: str | None
    status: int | None  # the HTTP status answered, when the action came over HTTP
    result: str  # "ok", or the error code (e.g. "unauthorized", "duplicate")
    detail: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cli_client() -> str:
    """Who runs this command line, as an audit entry's client: "cli:<user>@<host>"."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name in the environment and no passwd entry
        user = str(os.getuid())
    return f"cli:{user}@{socket.gethostname()}"


def audit_path(settings: Settings) -> Path:
    """Where the audit log of `settings` lives."""
    return Path(settings.service.audit_db) if settings.service.audit_db else Path(settings.index.data_dir) / AUDIT_FILE


class AuditLog:
    """The audit table in one SQLite file. A connection per call, so the server's threads
    may share one instance."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def for_settings(cls, settings: Settings) -> "AuditLog":
        return cls(audit_path(settings))

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=10)
        try:
            with connection:
                for statement in _SCHEMA:
                    connection.execute(statement)
            with connection:
                yield connection
        finally:
            connection.close()

    def record(
        self,
        action: str,
        doc_id: str | None,
        result: str,
        client: str | None = None,
        *,
        status: int | None = None,
        detail: str | None = None,
    ) -> AuditEntry:
        """Appends one entry (committed when this returns) and returns it."""
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        detail = detail[:_DETAIL_CHARS] if detail else None
        with self._connect() as connection:
            cursor = connection.execute(
                "INSERT INTO audit (time, client, action, doc_id, status, result, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (now, client, action, doc_id, status, result, detail),
            )
            entry_id = int(cursor.lastrowid)
        return AuditEntry(entry_id, now, client, action, doc_id, status, result, detail)

    def entries(self, limit: int = 50, action: str | None = None) -> list[AuditEntry]:
        """The newest `limit` entries (of `action` only, when given), newest first."""
        if not self.path.exists():
            return []
        query = "SELECT id, time, client, action, doc_id, status, result, detail FROM audit"
        parameters: list[Any] = []
        if action is not None:
            query += " WHERE action = ?"
            parameters.append(action)
        query += " ORDER BY id DESC LIMIT ?"
        parameters.append(int(limit))
        with self._connect() as connection:
            return [AuditEntry(*row) for row in connection.execute(query, parameters)]


class AdminAudit:
    """ASGI middleware recording every request that one of `routes` (the admin router's)
    serves, with the answer's status; the action comes from the route's endpoint name
    (`ACTIONS`), the document from the path or the answer. Successful GETs only read and
    are not recorded. The write runs in a worker thread, off the event loop."""

    def __init__(self, app: ASGIApp, log: AuditLog, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.log = log
        self.routes = list(routes)

    def _route(self, scope: Scope) -> tuple[BaseRoute, dict] | None:
        for route in self.routes:
            match, child_scope = route.matches(scope)
            if match == Match.FULL:
                return route, child_scope.get("path_params", {})
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = self._route(scope) if scope["type"] == "http" else None
        if matched is None:
            await self.app(scope, receive, send)
            return
        route, path_params = matched
        status: int | None = None
        body = bytearray()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and len(body) < _CAPTURED_BODY_BYTES:
                body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            if not (scope["method"] == "GET" and status is not None and status < 400):
                action, doc_id, result = _describe(
                    getattr(route, "name", "admin"), path_params, status, bytes(body)
                )
                client = scope.get("client")
                try:
                    await asyncio.to_thread(
                        self.log.record, action, doc_id, result, client[0] if client else None,
                        status=status, detail=entry_detail(status, bytes(body)),
                    )
                except Exception:  # the answer is sent already; the log says what was lost
                    log.exception("audit entry not written: %s %s %s", action, doc_id, result)


def _answer(body: bytes) -> dict:
    try:
        value = json.loads(body) if body else {}
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _describe(route_name: str, path_params: dict, status: int | None, body: bytes) -> tuple[str, str | None, str]:
    """(action, doc_id, result) of one admin request."""
    answer = _answer(body)
    action = ACTIONS.get(route_name, route_name)
    if action == "upload" and isinstance(answer.get("replaced"), dict):
        action = "replace"
    document = answer.get("document") if isinstance(answer.get("document"), dict) else {}
    doc_id = path_params.get("doc_id") or document.get("doc_id") or answer.get("duplicate_of")
    if status is None:
        result = "no_answer"  # the handler raised before answering
    elif status < 400:
        result = "ok"
    else:
        result = str(answer.get("error") or f"http_{status}")
    return action, doc_id, result


def entry_detail(status: int | None, body: bytes) -> str | None:
    """What else is worth keeping: the stored document's title (and what it replaced), the
    ticket of a rebuild, or the Chinese message of a refusal."""
    answer = _answer(body)
    if status is not None and status >= 400:
        return answer.get("message")
    parts = []
    document = answer.get("document")
    if isinstance(document, dict) and document.get("title"):
        parts.append(f"《{document['title']}》")
    replaced = answer.get("replaced")
    if isinstance(replaced, dict):
        parts.append(f"replaces {replaced.get('doc_id')} ({replaced.get('action')})")
    removed = answer.get("removed")
    if isinstance(removed, dict):
        parts.append(f"《{removed.get('title')}》 kept at {removed.get('kept_at')}")
    if "ticket" in answer:
        parts.append(f"rebuild ticket {answer['ticket']}")
    return "; ".join(parts) or None


__all__ = ["ACTIONS", "AdminAudit", "AuditEntry", "AuditLog", "audit_path", "cli_client"]
