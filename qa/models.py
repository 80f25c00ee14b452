"""Data classes at the QA seam. `Answer.to_dict()` is exactly the HTTP API's JSON."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Citation:
    """A quoted passage. For an answer citation `quote` is the cited sentence(s) and
    `highlights` marks the answer inside it; for a retrieved passage `quote` is the whole
    chunk text. Spans are [start, end) offsets into `quote`."""

    title: str
    section: str
    quote: str
    source_file: str
    doc_id: str
    chunk_id: str
    score: float
    highlights: tuple[tuple[int, int], ...] = ()
    note: str | None = None  # e.g. "研究报告，非政策文件" / "已被替代"

    def to_dict(self) -> dict:
        return {
            "title": self.title,
            "section": self.section,
            "quote": self.quote,
            "source_file": self.source_file,
            "doc_id": self.doc_id,
            "chunk_id": self.chunk_id,
            "score": round(float(self.score), 6),
            "highlights": [list(span) for span in self.highlights],
            "note": self.note,
        }


@dataclass(frozen=True)
class Answer:
    answer: str
    answered: bool
    query: str
    citations: tuple[Citation, ...] = ()
    passages: tuple[Citation, ...] = ()
    latency_ms: float = 0.0
    question: str = ""
    span: str | None = None  # a tighter extract inside the answer (e.g. the number asked for)
    notice: str | None = None  # a message about the input itself (e.g. English question)
    extra: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        return {
            "answer": self.answer,
            "answered": self.answered,
            "query": self.query,
            "citations": [c.to_dict() for c in self.citations],
            "passages": [p.to_dict() for p in self.passages],
            "span": self.span,
            "latency_ms": round(self.latency_ms, 3),
            "notice": self.notice,
        }
