"""Data classes at the QA seam. `Answer.to_dict()` is exactly the HTTP API's JSON."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from index.models import Hit


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
    # The reader's probability that the cited passage answers the question (0 to 1); for a
    # refusal, that of the closest passage.
    confidence: float = 0.0
    # The question as the assistant understood it: a follow-up put back into the earlier
    # question ("虹桥国际中央商务区涉及哪几个区？"), else `query`; what users are shown.
    understood_as: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def confidence_label(self) -> str:
        """What users read next to an answer: 高 / 中 / 低."""
        return confidence_label(self.confidence)

    def to_dict(self) -> dict:
        return {
            "answer": self.answer,
            "answered": self.answered,
            "query": self.query,
            "understood_as": self.understood_as or self.query,
            "citations": [c.to_dict() for c in self.citations],
            "passages": [p.to_dict() for p in self.passages],
            "span": self.span,
            "latency_ms": round(self.latency_ms, 3),
            "notice": self.notice,
            "confidence": round(float(self.confidence), 4),
            "confidence_label": self.confidence_label,
        }


# Where the labels change; the refusal threshold (tuned on dev) sits below "中".
CONFIDENCE_HIGH = 0.8
CONFIDENCE_MEDIUM = 0.5


def confidence_label(confidence: float) -> str:
    if confidence >= CONFIDENCE_HIGH:
        return "高"
    if confidence >= CONFIDENCE_MEDIUM:
        return "中"
    return "低"


@runtime_checkable
class PassageRetriever(Protocol):
    """Question in, fused passages out, best first (`qa.retrieve.Retriever` is the real one)."""

    def run(self, query: str, top_k: int, doc_ids: Collection[str] | None = None) -> list[Hit]: ...
