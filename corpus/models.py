"""Data classes at the corpus seam: what loading, cleaning and chunking hand to the index,
and the one model of a document's metadata (catalogue entry, upload form, API summary)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

SECTION_SEPARATOR = " > "
DOC_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ISO_DATE_PATTERN = r"^\d{4}(-\d{2}(-\d{2})?)?$"


def content_hash(*parts: str, length: int = 16) -> str:
    """Stable hex id of the given strings, so ids survive rebuilds and machines."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return digest[:length]


class Status(StrEnum):
    """A document's legal standing. Only `in force` counts as in force: the others stay
    searchable, and their citations carry `note`."""

    IN_FORCE = "in force"
    SUPERSEDED = "superseded"
    EXPIRED = "expired"
    EXCERPT = "excerpt"
    RESEARCH = "research/opinion"
    DRAFT = "draft"

    @property
    def in_force(self) -> bool:
        return self is Status.IN_FORCE

    @property
    def label(self) -> str:
        """The Chinese name staff pick it by."""
        return _STATUS_LABELS[self]

    @property
    def note(self) -> str | None:
        """What a user must read next to a citation of such a document; None in force."""
        return _STATUS_NOTES.get(self)


_STATUS_LABELS = {
    Status.IN_FORCE: "现行有效",
    Status.SUPERSEDED: "已被替代",
    Status.EXPIRED: "已失效",
    Status.EXCERPT: "节选",
    Status.RESEARCH: "研究报告/观点",
    Status.DRAFT: "草案/征求意见稿",
}
_STATUS_NOTES = {
    Status.SUPERSEDED: "该文件已被新文件替代，仅供参考",
    Status.EXPIRED: "该文件已失效，仅供参考",
    Status.EXCERPT: "节选文本",
    Status.RESEARCH: "研究报告/观点文章，非政策文件",
    Status.DRAFT: "草案，尚未生效，仅供参考",
}


@dataclass(frozen=True)
class Section:
    """A heading and the span of cleaned document text it governs (heading included)."""

    path: tuple[str, ...]
    char_span: tuple[int, int]

    @property
    def title(self) -> str:
        return self.path[-1] if self.path else ""

    @property
    def level(self) -> int:
        return len(self.path)

    @property
    def path_text(self) -> str:
        return SECTION_SEPARATOR.join(self.path)



def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _blank_to_none(value: Any) -> Any:
    return _strip(value) or None if isinstance(value, str) else value


def optional_text(**constraints: Any) -> Any:
    """An optional string with `constraints` (max_length, pattern); blank means None."""
    return Annotated[Annotated[str, Field(**constraints)] | None, BeforeValidator(_blank_to_none)]


IsoDate = optional_text(pattern=ISO_DATE_PATTERN)


class DocumentMetadata(BaseModel):
    """What is known about a document besides its text: given by staff (upload form,
    `policyqa add` flags), read from its text, or kept in the catalogue. None means unknown;
    blank strings are None."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: optional_text(max_length=200) = Field(None, description="标题。Title.",
                        examples=["虹桥国际开放枢纽建设总体方案"])
    issuer: optional_text(max_length=200) = Field(None, description="发文机关。Issuing body.")
    doc_number: optional_text(max_length=100) = Field(None, description="文号。Document number.",
                             examples=["沪府发〔2021〕2号"])
    date: IsoDate = Field(None, description="发文日期（YYYY-MM-DD、YYYY-MM 或 YYYY）。Date issued.")
    kind: optional_text(max_length=50) = Field(None, description="文档类型。Kind: plan, notice, report...")
    status: Status | None = Field(None, description="效力状态。Status: in force, superseded, ...")
    effective_date: IsoDate = Field(None, description="施行日期。Effective date, where known.")
    region: optional_text(max_length=100) = Field(None, description="适用地区。Region, where known.")

    def given(self) -> dict[str, Any]:
        """The fields that are set."""
        return self.model_dump(exclude_none=True, include=set(DocumentMetadata.model_fields))


class DocumentInfo(DocumentMetadata):
    """A document as the knowledge base lists it: its id, a title, and its metadata."""

    doc_id: str = Field(description="文档编号。Document id.", examples=["001"])
    title: str = Field(min_length=1, description="标题。Title.",
                       examples=["虹桥国际开放枢纽建设总体方案"])
    # Terms of this document questions use that jieba's dictionary lacks (abbreviations such
    # as a fair's short name), from the catalogue; the analyzer keeps them whole.
    keywords: tuple[Annotated[str, BeforeValidator(_strip), Field(min_length=1)], ...] = Field(
        (), description="检索时保持完整的词。Terms the analyzer keeps whole."
    )


class CatalogueEntry(DocumentInfo):
    """One document (one part of a file) in corpus/catalogue.json."""

    doc_id: str = Field(pattern=DOC_ID_PATTERN, description="文档编号。Document id.")
    starts_at_line: str | None = None  # where this part begins, for files of several parts
    note: str | None = None  # for maintainers; never shown


class Document(DocumentInfo):
    """One logical document: a source file may hold several (file 003 holds two).

    `text` is the cleaned text users are shown (original characters kept); every
    `Section.char_span` and `Chunk.char_span` indexes into it.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    source_file: str = Field(description="来源文件名。Source file name.")
    text: str = Field(repr=False)
    sections: tuple[Section, ...] = ()
    content_sha256: str = ""

    @property
    def in_force(self) -> bool:
        """Counts as in force: a status of in force. A document without a status (a file
        dropped into the folder by hand) is taken as in force, as `Library.add` defaults."""
        return self.status is None or self.status.in_force

    @property
    def metadata(self) -> DocumentMetadata:
        return DocumentMetadata(**self.given())


FIELD_LABELS = {
    "doc_id": "文档编号", "title": "标题", "issuer": "发文机关", "doc_number": "文号",
    "date": "发文日期", "kind": "文档类型", "status": "效力状态", "effective_date": "生效日期",
    "region": "适用地区", "keywords": "关键词", "starts_at_line": "起始行", "note": "备注",
}
_PATTERN_RULES = {
    "doc_id": "只能由字母、数字、_ 或 - 组成（最多 64 个字符）",
    "date": "格式应为 YYYY-MM-DD（或 YYYY-MM、YYYY）",
    "effective_date": "格式应为 YYYY-MM-DD（或 YYYY-MM、YYYY）",
}
STATUS_CHOICES = "、".join(f"{status.value}（{status.label}）" for status in Status)


# pydantic error type -> message; {label} names the field, the others come from the error.
_PROBLEMS = {
    "extra_forbidden": "未知字段 {name}",
    "missing": "缺少{label}",
    "enum": "未知的{label}，可选：{choices}",
    "string_pattern_mismatch": "{label}{rule}",
    "string_too_long": "{label}过长（最多 {max_length} 个字符）",
    "string_too_short": "{label}不能为空",
}


def metadata_problem(error: ValidationError) -> str:
    """The first problem of a metadata `ValidationError`, in Chinese, naming the field but
    never repeating the value."""
    first = error.errors(include_input=False)[0]
    name = str(first["loc"][0]) if first["loc"] else ""
    label = f"{FIELD_LABELS[name]}（{name}）" if name in FIELD_LABELS else f"字段 {name}"
    if name == "keywords" and first["type"] != "extra_forbidden":
        return f"{label}应为非空字符串的列表"
    template = _PROBLEMS.get(first["type"], "{label}应为字符串或 null")
    return template.format(
        name=name, label=label, choices=STATUS_CHOICES, rule=_PATTERN_RULES.get(name, "格式有误"),
        max_length=(first.get("ctx") or {}).get("max_length", ""),
    )


@dataclass(frozen=True)
class Chunk:
    """A passage of one section of one document.

    `text` equals `document.text[char_span[0]:char_span[1]]` exactly, so a citation can
    quote and highlight it. `index_text` (title, section path and table header prepended) is
    what the retrievers see; it is never shown.
    """

    chunk_id: str
    doc_id: str
    title: str
    source_file: str
    section_path: tuple[str, ...]
    text: str
    char_span: tuple[int, int]
    sentences: tuple[tuple[int, int], ...] = field(default=())  # spans relative to `text`
    # The header row of the table this chunk continues, when the chunk starts below it:
    # the column names ("2025年目标值") that say what the chunk's cells are. Not part of `text`.
    table_header: str = ""

    @property
    def section(self) -> str:
        return SECTION_SEPARATOR.join(self.section_path)

    @property
    def context(self) -> str:
        """What heads the chunk without being quoted: its section path and table header."""
        return f"{self.section}\n{self.table_header}" if self.table_header else self.section

    @property
    def index_text(self) -> str:
        return f"{self.title}\n{self.context}\n{self.text}"

    @staticmethod
    def make_id(doc_id: str, section_path: tuple[str, ...], text: str) -> str:
        return content_hash(doc_id, SECTION_SEPARATOR.join(section_path), text)


# How index files store chunks: `CHUNK_LIST.dump_python(chunks, mode="json")` and back with
# `CHUNK_LIST.validate_python(data)`.
CHUNK_LIST = TypeAdapter(list[Chunk])
