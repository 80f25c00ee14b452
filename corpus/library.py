"""The document store: what staff add to, replace in and remove from the knowledge base.

Originals are kept byte for byte in `settings.corpus.corpus_dir` under `<doc_id>_<sha256[:16]><suffix>`
(the seed files' naming), and each added document gets an entry in `settings.corpus.catalogue_path`,
so `load_corpus` and `policyqa build` see added documents with the same ids and metadata as
the service does. Nothing is ever deleted: a removed original moves to `corpus_dir/.removed/`
with its catalogue entry beside it (the loader skips hidden folders).

Every change is checked before the corpus is touched: the file is loaded from a temporary
copy first, so a corrupt, empty, scanned or unsupported file changes nothing. Files and the
catalogue are replaced atomically (`corpus.atomic`: temp file, fsync, rename, then the
directory synced so that the rename survives a crash), and one lock file serialises writers across processes (the CLI and
the server may both change the corpus).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from corpus.atomic import atomic_write_bytes, rename_durably
from corpus.loaders import (
    SUPPORTED_SUFFIXES,
    Catalogue,
    CorpusLoad,
    DocumentLoadError,
    DocumentTooLargeError,
    load_corpus,
    load_file,
)
from corpus.models import (
    CatalogueEntry,
    Document,
    DocumentInfo,
    DocumentMetadata,
    Status,
    metadata_problem,
)
from corpus.settings import Settings
from corpus.text import fold

REMOVED_DIR = ".removed"
# Temporary folders of files being checked, named with the owning process id so that a
# later start can tell the folders of a process that died mid-upload from live ones.
UPLOAD_TEMP_PREFIX = "policyqa-upload-"
_ABANDONED_UNOWNED_S = 3600  # folders of older versions carry no pid: removed after an hour
_LOCK_FILE = ".library.lock"
_DOC_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HEAD_LINES = 15
_TAIL_LINES = 8
# 沪府发〔2021〕2号, 国发[2020]13号, 沪虹商管【2022】76号 (after full-width folding).
_DOC_NUMBER = re.compile(r"[\u4e00-\u9fff]{1,12}[〔\[【]\s*\d{4}\s*[〕\]】]\s*第?\s*\d{1,5}\s*号")
_FULL_DATE = re.compile(r"(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*日")
_MONTH_DATE = re.compile(r"(\d{4})\s*年\s*(\d{1,2})\s*月(?!\s*\d)")
_EFFECTIVE = re.compile(
    r"自\s*(\d{4}\s*年\s*\d{1,2}\s*月\s*\d{1,2}\s*日)\s*起\s*(?:施行|实施|执行|生效)"
)
_ISSUER_BEFORE_ABOUT = re.compile(r"^([\u4e00-\u9fff（）()、]{4,40}?)关于")
# Title endings -> kind, checked in order (the seed catalogue's kind vocabulary).
_KIND_BY_TITLE = (
    ("通知", "notice"),
    ("意见", "opinion"),
    ("办法", "measures"),
    ("规定", "regulation"),
    ("条例", "regulation"),
    ("细则", "regulation"),
    ("方案", "plan"),
    ("规划", "plan"),
    ("目录", "catalogue"),
    ("公告", "notice"),
)


class LibraryError(ValueError):
    """A change to the knowledge base that cannot be made; `message` is Chinese, for staff.

    `code` says which kind (the HTTP layer maps it to a status): "not_found", "invalid",
    "unsupported", "too_large", "conflict" (e.g. part of a multi-document file).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class DuplicateDocumentError(LibraryError):
    """The same content is already in the knowledge base, as `doc_id`."""

    def __init__(self, doc_id: str, title: str) -> None:
        super().__init__("duplicate", f"该文件已在知识库中（文档 {doc_id}《{title}》），未重复添加。")
        self.doc_id = doc_id
        self.title = title


@dataclass(frozen=True)
class AddedDocument:
    """What `Library.add` stored: the new document and, with `replaces`, what happened to
    the old one ("superseded" or "removed")."""

    document: Document
    stored_file: str
    replaced_doc_id: str | None = None
    replaced_action: str | None = None


@dataclass(frozen=True)
class RemovedDocument:
    doc_id: str
    title: str
    source_file: str
    kept_at: str  # where the original now lies, relative to corpus_dir


def extract_metadata(text: str) -> DocumentMetadata:
    """What a policy document states about itself in its first (and last) lines: 文号, the
    date it was issued (YYYY-MM-DD or YYYY-MM), the date it takes effect (自...起施行), the
    issuer (from "XX关于...的通知" titles) and a kind from the title's last word. The title is
    left to the loader (first heading or line)."""
    lines = [line.strip() for line in fold(text).splitlines() if line.strip()]
    head = "\n".join(lines[:_HEAD_LINES])
    doc_number = _DOC_NUMBER.search(head)
    date_lines = [line for line in lines[:_HEAD_LINES] + lines[-_TAIL_LINES:] if _is_date_line(line)]
    date = _find_date(date_lines[0]) if date_lines else _find_date(_EFFECTIVE.sub("", head))
    effective = _EFFECTIVE.search(fold(text))
    first = lines[0].lstrip("# ") if lines else ""  # a markdown title keeps no "#"
    issuer = _ISSUER_BEFORE_ABOUT.match(first)
    return DocumentMetadata(
        doc_number=re.sub(r"\s+", "", _unfold_brackets(doc_number.group(0))) if doc_number else None,
        date=date,
        effective_date=_find_date(effective.group(1)) if effective else None,
        issuer=issuer.group(1) if issuer else None,
        kind=next((kind for word, kind in _KIND_BY_TITLE if first.endswith(word)), None),
    )


def _unfold_brackets(text: str) -> str:
    """〔〕 is the standard 文号 bracket; folding leaves it alone, so only [] and 【】 map to it."""
    return text.replace("[", "〔").replace("]", "〕").replace("【", "〔").replace("】", "〕")


def _is_date_line(line: str) -> bool:
    """A line that is only a date, as under a signature or on a cover ("2021年1月5日",
    "（2022 年 8 月）")."""
    bare = re.sub(r"[\s()（）]", "", line)
    return bool(re.fullmatch(r"\d{4}年\d{1,2}月(\d{1,2}日)?", bare))


def _find_date(text: str) -> str | None:
    full = _FULL_DATE.search(text)
    if full:
        year, month, day = (int(part) for part in full.groups())
        if 1 <= month <= 12 and 1 <= day <= 31:
            return f"{year:04d}-{month:02d}-{day:02d}"
    month_only = _MONTH_DATE.search(text)
    if month_only:
        year, month = (int(part) for part in month_only.groups())
        if 1 <= month <= 12:
            return f"{year:04d}-{month:02d}"
    return None


def check_metadata(**values: Any) -> DocumentMetadata:
    """The metadata staff gave (form fields, CLI flags; blank means not given).

    :raises LibraryError: ("invalid") for an unknown status, a date not in ISO form, an
        over-long field; the message names the field in Chinese.
    """
    try:
        return DocumentMetadata(**values)
    except ValidationError as error:
        raise LibraryError("invalid", f"{metadata_problem(error)}。") from None


def _sha256_bytes(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def upload_temp_folder() -> Path:
    """A new temporary folder for a file being received or checked, named with this
    process's id (see `remove_abandoned_upload_folders`)."""
    return Path(tempfile.mkdtemp(prefix=f"{UPLOAD_TEMP_PREFIX}{os.getpid()}-"))


def remove_abandoned_upload_folders(temp_dir: Path | None = None) -> int:
    """Deletes the upload folders that processes killed mid-upload left in the temporary
    directory: those whose process no longer runs, and unowned ones (from versions that did
    not name the process) older than an hour. Returns how many were removed."""
    removed = 0
    now = datetime.now(timezone.utc).timestamp()
    for folder in Path(temp_dir or tempfile.gettempdir()).glob(f"{UPLOAD_TEMP_PREFIX}*"):
        # "<pid>-<random>" now; only "<random>" (possibly all digits) before.
        owner, separator, _ = folder.name[len(UPLOAD_TEMP_PREFIX):].partition("-")
        try:
            if not folder.is_dir() or folder.is_symlink():
                continue
            if separator and owner.isdigit():
                abandoned = not process_running(int(owner))
            else:
                abandoned = now - folder.stat().st_mtime > _ABANDONED_UNOWNED_S
        except OSError:
            continue
        if abandoned:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def process_running(pid: int) -> bool:
    """Is process `pid` alive (on this machine)?"""
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    except OverflowError:
        return False
    return True


class Library:
    """The knowledge base on disk: `settings.corpus.corpus_dir` plus `settings.corpus.catalogue_path`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.corpus_dir = Path(settings.corpus.corpus_dir)
        self.catalogue_path = Path(settings.corpus.catalogue_path)

    @contextlib.contextmanager
    def _locked(self, shared: bool = False) -> Iterator[None]:
        self.corpus_dir.mkdir(parents=True, exist_ok=True)
        with open(self.corpus_dir / _LOCK_FILE, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def load(self) -> CorpusLoad:
        """The corpus as it stands, read while no change is half made."""
        with self._locked(shared=True):
            return load_corpus(self.settings)

    # --- adding ------------------------------------------------------------------------------

    def add(
        self,
        source: Path,
        metadata: DocumentMetadata = DocumentMetadata(),
        *,
        original_name: str | None = None,
        doc_id: str | None = None,
        replaces: str | None = None,
        remove_replaced: bool = False,
    ) -> AddedDocument:
        """Stores the file at `source` (left where it is) as a new document.

        Metadata comes from `metadata` where given, else from the document's text (title from
        its first heading or line; 文号 and dates by pattern), status defaulting to "in force".
        With `replaces`, the old document is marked "superseded" (kept, flagged) or, with
        `remove_replaced`, removed.

        :raises LibraryError: unsupported type ("unsupported"), over the size limit or
            unpacking beyond `max_unpacked_document_bytes` ("too_large"), unreadable / empty / scanned / corrupt ("invalid"), bad metadata
            or doc id ("invalid"), unknown `replaces` ("not_found"), a doc id in use
            ("conflict").
        :raises DuplicateDocumentError: the same file or text is already stored.
        """
        source = Path(source)
        name = original_name or source.name
        suffix = Path(name).suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            kinds = "、".join(SUPPORTED_SUFFIXES)
            raise LibraryError(
                "unsupported", f"不支持的文件类型“{suffix or '无扩展名'}”（支持 {kinds}）：{name}"
            )
        size = source.stat().st_size
        if size > self.settings.corpus.max_document_bytes:
            limit_mb = self.settings.corpus.max_document_bytes / 1024 / 1024
            raise LibraryError("too_large", f"文件超过大小上限（{limit_mb:g} MB）：{name}")
        if doc_id is not None and not _DOC_ID.fullmatch(doc_id):
            raise LibraryError("invalid", "文档编号只能由字母、数字、_ 或 - 组成（最多 64 个字符）。")
        candidate = self._trial_load(source, suffix, name)
        raw_sha = _sha256_bytes(source)

        with self._locked():
            current = load_corpus(self.settings)
            self._refuse_duplicate(raw_sha, candidate.content_sha256, current.documents)
            taken = {d.doc_id for d in current.documents} | self._catalogued_ids() | self._retired_ids()
            if doc_id is not None and doc_id in taken:
                raise LibraryError("conflict", f"文档编号 {doc_id} 已被使用，请换一个。")
            if replaces is not None and replaces not in {d.doc_id for d in current.documents}:
                raise LibraryError("not_found", f"要替代的文档 {replaces} 不存在。")
            if replaces is not None and remove_replaced:
                self._removable(replaces, current.documents)  # refuse before writing anything
            new_id = doc_id or self._next_id(taken)
            entry = self._entry(new_id, candidate, metadata)
            stored_name = f"{new_id}_{raw_sha[:16]}{suffix}"
            catalogue = self._read_catalogue()
            catalogue["files"][stored_name] = {
                **entry,
                "note": f"Added {datetime.now(timezone.utc):%Y-%m-%dT%H:%MZ} from {name!r}"
                + (f"; replaces {replaces}." if replaces else "."),
            }
            replaced_action = None
            if replaces is not None and not remove_replaced:
                self._mark_superseded(catalogue, replaces, new_id, current.documents)
                replaced_action = "superseded"
            # The catalogue goes first: an entry without its file is ignored by the loader,
            # whereas a file without its entry would load under the wrong id and metadata.
            self._write_catalogue(catalogue)
            try:
                atomic_write_bytes(self.corpus_dir / stored_name, source.read_bytes())
            except BaseException:
                catalogue["files"].pop(stored_name, None)
                self._write_catalogue(catalogue)
                raise
            if replaces is not None and remove_replaced:
                self._remove_locked(replaces, current.documents)
                replaced_action = "removed"
        stored = Document(
            **entry,
            source_file=stored_name,
            text=candidate.text,
            sections=candidate.sections,
            content_sha256=candidate.content_sha256,
        )
        return AddedDocument(stored, stored_name, replaces, replaced_action)

    def _trial_load(self, source: Path, suffix: str, name: str) -> Document:
        """Loads a copy of the file in a temporary folder, so a bad file never reaches the
        corpus; a file holding nothing usable is refused here."""
        folder = upload_temp_folder()
        try:
            trial = folder / f"upload{suffix}"
            shutil.copyfile(source, trial)
            try:
                documents = load_file(
                    trial, max_unpacked_bytes=self.settings.corpus.max_unpacked_document_bytes
                )
            except DocumentTooLargeError as error:
                raise LibraryError("too_large", f"无法读取文件 {name}：{error.reason}") from None
            except DocumentLoadError as error:
                raise LibraryError("invalid", f"无法读取文件 {name}：{error.reason}") from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if not documents or not documents[0].text.strip():
            raise LibraryError("invalid", f"无法读取文件 {name}：没有可用的正文")
        return documents[0]

    def _refuse_duplicate(self, raw_sha: str, text_sha: str, documents: list[Document]) -> None:
        by_file = {document.source_file: document for document in documents}
        for document in documents:
            if document.content_sha256 == text_sha:
                raise DuplicateDocumentError(document.doc_id, document.title)
        for path in sorted(self.corpus_dir.iterdir()):
            if path.is_file() and path.name in by_file and _sha256_bytes(path) == raw_sha:
                document = by_file[path.name]
                raise DuplicateDocumentError(document.doc_id, document.title)

    @staticmethod
    def _next_id(taken: set[str]) -> str:
        """The next free three-digit id after the highest numeric one ("005" after "004")."""
        numbers = [int(match.group(1)) for doc_id in taken if (match := re.match(r"(\d+)", doc_id))]
        number = max(numbers, default=-1) + 1
        while f"{number:03d}" in taken:
            number += 1
        return f"{number:03d}"

    @staticmethod
    def _entry(doc_id: str, candidate: Document, metadata: DocumentMetadata) -> dict:
        """The catalogue entry: what staff gave, else what the text states, status in force."""
        entry = CatalogueEntry(**{
            "title": candidate.title,
            "status": Status.IN_FORCE,
            **extract_metadata(candidate.text).given(),
            **metadata.given(),
            "doc_id": doc_id,
        })
        return entry.model_dump(mode="json", exclude={"starts_at_line", "note"})

    # --- replacing and removing ----------------------------------------------------------------

    def mark_superseded(self, doc_id: str, by: str | None = None) -> None:
        """Flags `doc_id` as superseded (kept and searchable, cited with a note), by the
        document `by` when given.

        :raises LibraryError: ("not_found") for an unknown id, or a `by` that is unknown or
            `doc_id` itself.
        """
        with self._locked():
            documents = load_corpus(self.settings).documents
            known = {document.doc_id for document in documents}
            if doc_id not in known:
                raise LibraryError("not_found", f"文档 {doc_id} 不存在。")
            if by is not None and by not in known - {doc_id}:
                raise LibraryError("not_found", f"替代它的文档 {by} 不存在（或就是它本身）。")
            catalogue = self._read_catalogue()
            self._mark_superseded(catalogue, doc_id, by, documents)
            self._write_catalogue(catalogue)

    def _mark_superseded(
        self, catalogue: dict, doc_id: str, by: str | None, documents: list[Document]
    ) -> None:
        note = f"Superseded by {by}." if by else "Superseded."
        for file_name, entry in catalogue["files"].items():
            for part in entry.get("parts", [entry]):
                if part.get("doc_id") == doc_id:
                    part["status"] = Status.SUPERSEDED
                    part["note"] = f"{part.get('note', '')} {note}".strip()
                    return
        # A file dropped into the folder by hand has no entry yet: write one that keeps
        # what the loader made of it.
        document = next(d for d in documents if d.doc_id == doc_id)
        entry = document.model_dump(mode="json", include=set(DocumentInfo.model_fields))
        catalogue["files"][document.source_file] = {**entry, "status": Status.SUPERSEDED, "note": note}

    def remove(self, doc_id: str) -> RemovedDocument:
        """Takes `doc_id` out of the knowledge base. Its original moves to
        `corpus_dir/.removed/` with its catalogue entry, so nothing is lost.

        :raises LibraryError: ("not_found") for an unknown id, ("conflict") for one part
            of a file that holds several documents (mark it superseded instead).
        """
        with self._locked():
            return self._remove_locked(doc_id, load_corpus(self.settings).documents)

    @staticmethod
    def _removable(doc_id: str, documents: list[Document]) -> Document:
        """The document `doc_id`, if it can be removed on its own.

        :raises LibraryError: ("not_found"), or ("conflict") for one part of a file that
            holds several documents.
        """
        document = next((d for d in documents if d.doc_id == doc_id), None)
        if document is None:
            raise LibraryError("not_found", f"文档 {doc_id} 不存在。")
        siblings = [d.doc_id for d in documents if d.source_file == document.source_file]
        if len(siblings) > 1:
            raise LibraryError(
                "conflict",
                f"文档 {doc_id} 与 {'、'.join(s for s in siblings if s != doc_id)} 同在文件 "
                f"{document.source_file} 中，不能单独删除；可改为标记为已替代（superseded）。",
            )
        return document

    def _remove_locked(self, doc_id: str, documents: list[Document]) -> RemovedDocument:
        document = self._removable(doc_id, documents)
        catalogue = self._read_catalogue()
        entry = catalogue["files"].pop(document.source_file, None)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        removed_dir = self.corpus_dir / REMOVED_DIR
        removed_dir.mkdir(exist_ok=True)
        kept = removed_dir / f"{stamp}_{document.source_file}"
        atomic_write_bytes(
            kept.with_name(kept.name + ".json"),
            json.dumps({"file": document.source_file, "catalogue_entry": entry}, ensure_ascii=False,
                       indent=2).encode("utf-8"),
        )
        # The file leaves the corpus first (a rename, so it is never half there); the
        # catalogue entry of a missing file is harmless if we stop in between.
        rename_durably(self.corpus_dir / document.source_file, kept)
        if entry is not None:
            self._write_catalogue(catalogue)
        return RemovedDocument(document.doc_id, document.title, document.source_file,
                               str(kept.relative_to(self.corpus_dir)))

    # --- the catalogue -----------------------------------------------------------------------

    def _read_catalogue(self) -> dict:
        """The catalogue JSON as a dict (checked by `Catalogue.from_dict`); a fresh one when
        the file does not exist yet.

        :raises LibraryError: ("invalid") when it is malformed: we never overwrite it then.
        """
        if not self.catalogue_path.exists():
            return {"about": "Metadata of the documents in the corpus folder, keyed by file name.",
                    "files": {}}
        try:
            data = json.loads(self.catalogue_path.read_text(encoding="utf-8"))
            Catalogue.from_dict(data, self.catalogue_path.name)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as error:
            raise LibraryError(
                "invalid", f"文档目录文件 {self.catalogue_path.name} 有误，请先修复：{error}"
            ) from None
        return data

    def _catalogued_ids(self) -> set[str]:
        files = self._read_catalogue()["files"]
        return {part["doc_id"] for entry in files.values() for part in entry.get("parts", [entry])}

    def _retired_ids(self) -> set[str]:
        """Ids of removed documents: never handed out again, so old citations, feedback
        and eval labels never point at a different document."""
        retired = set()
        for record in (self.corpus_dir / REMOVED_DIR).glob("*.json"):
            with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
                entry = json.loads(record.read_text(encoding="utf-8"))["catalogue_entry"] or {}
                retired.update(part["doc_id"] for part in entry.get("parts", [entry]))
        return retired

    def _write_catalogue(self, data: dict) -> None:
        Catalogue.from_dict(data, self.catalogue_path.name)  # never write one the loader refuses
        text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
        self.catalogue_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.catalogue_path, text.encode("utf-8"))


__all__ = [
    "AddedDocument",
    "DocumentMetadata",
    "DuplicateDocumentError",
    "Library",
    "LibraryError",
    "RemovedDocument",
    "check_metadata",
    "extract_metadata",
    "remove_abandoned_upload_folders",
    "upload_temp_folder",
]
