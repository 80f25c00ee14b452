"""Data classes at the corpus seam: what loading, cleaning and chunking hand to the index."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

SECTION_SEPARATOR = " > "


def content_hash(*parts: str, length: int = 16) -> str:
    """Stable hex id of the given strings, so ids survive rebuilds and machines."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return digest[:length]


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


@dataclass(frozen=True)
class Document:
    """One logical document: a source file may hold several (file 003 holds two).

    `text` is the cleaned text users are shown (original characters kept); every
    `Section.char_span` and `Chunk.char_span` indexes into it.
    """

    doc_id: str
    title: str
    source_file: str
    text: str
    sections: tuple[Section, ...] = ()
    issuer: str | None = None
    doc_number: str | None = None
    date: str | None = None
    kind: str | None = None  # plan, notice, catalogue, research report, article, ...
    status: str | None = None  # in force, superseded, excerpt, research/opinion, ...
    effective_date: str | None = None
    region: str | None = None
    content_sha256: str = ""
    # Terms of this document questions use that jieba's dictionary lacks (abbreviations such
    # as a fair's short name), from the catalogue; the analyzer keeps them whole.
    keywords: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # documents.json stores a list; a tuple keeps the frozen document hashable.
        object.__setattr__(self, "keywords", tuple(self.keywords))

    def to_dict(self, with_text: bool = False) -> dict:
        data = asdict(self)
        data["sections"] = [
            {"path": list(s.path), "char_span": list(s.char_span)} for s in self.sections
        ]
        data["keywords"] = list(self.keywords)
        if not with_text:
            data.pop("text")
        return data


@dataclass(frozen=True)
class Chunk:
    """A passage of one section of one document.

    `text` equals `document.text[char_span[0]:char_span[1]]` exactly, so a citation can
    quote and highlight it. `index_text` (title and section path prepended) is what the
    retrievers see; it is never shown.
    """

    chunk_id: str
    doc_id: str
    title: str
    source_file: str
    section_path: tuple[str, ...]
    text: str
    char_span: tuple[int, int]
    sentences: tuple[tuple[int, int], ...] = field(default=())  # spans relative to `text`

    @property
    def section(self) -> str:
        return SECTION_SEPARATOR.join(self.section_path)

    @property
    def index_text(self) -> str:
        return f"{self.title}\n{self.section}\n{self.text}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["section_path"] = list(self.section_path)
        data["char_span"] = list(self.char_span)
        data["sentences"] = [list(s) for s in self.sentences]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Chunk":
        return cls(
            chunk_id=data["chunk_id"],
            doc_id=data["doc_id"],
            title=data["title"],
            source_file=data["source_file"],
            section_path=tuple(data["section_path"]),
            text=data["text"],
            char_span=(int(data["char_span"][0]), int(data["char_span"][1])),
            sentences=tuple((int(a), int(b)) for a, b in data.get("sentences", ())),
        )

    @staticmethod
    def make_id(doc_id: str, section_path: tuple[str, ...], text: str) -> str:
        return content_hash(doc_id, SECTION_SEPARATOR.join(section_path), text)
