"""Passages for retrieval: sentence-aligned chunks that never cross a section boundary.

Each section's own text (from its heading to the next heading of any level) is cut into
sentences, and sentences are packed into chunks of about `chunk_size` characters. The
last sentences of a chunk, up to `chunk_overlap` characters of whole sentences, open the
next chunk too, so an answer that straddles a cut is still quoted whole somewhere.

A section that is only its heading line, with subsections right under it ("二、总体要求"
followed by "（一）..."), gets no chunk of its own: its title already heads every
subsection's path, and a chunk holding nothing but a title would out-rank real answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from corpus.models import Chunk, Document, Section
from corpus.settings import Settings
from corpus.text import sentence_spans, split_long_span


@dataclass(frozen=True)
class Segment:
    """The text a section holds itself, without its subsections."""

    path: tuple[str, ...]
    char_span: tuple[int, int]


class Chunker:
    """Cuts documents into `Chunk`s. Deterministic: the same document gives the same
    chunks, ids included."""

    def __init__(self, chunk_size: int = 300, chunk_overlap: int = 60) -> None:
        """:raises ValueError: when chunk_size < 1 or the overlap is not below the size."""
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        if not 0 <= chunk_overlap < chunk_size:
            raise ValueError("chunk_overlap must be at least 0 and smaller than chunk_size")
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap

    @classmethod
    def from_settings(cls, settings: Settings) -> "Chunker":
        return cls(settings.corpus.chunk_size, settings.corpus.chunk_overlap)

    def run(self, document: Document) -> list[Chunk]:
        chunks: list[Chunk] = []
        seen_ids: set[str] = set()
        for segment in segments(document):
            for start, end, sentences in self._pack(document.text, segment.char_span):
                text = document.text[start:end]
                chunk_id = Chunk.make_id(document.doc_id, segment.path, text)
                if chunk_id in seen_ids:  # the same passage twice in one section: keep one
                    continue
                seen_ids.add(chunk_id)
                chunks.append(
                    Chunk(
                        chunk_id=chunk_id,
                        doc_id=document.doc_id,
                        title=document.title,
                        source_file=document.source_file,
                        section_path=segment.path,
                        text=text,
                        char_span=(start, end),
                        sentences=tuple((s - start, e - start) for s, e in sentences),
                        table_header=table_header(document.text, start),
                    )
                )
        return chunks

    def _pack(
        self, text: str, span: tuple[int, int]
    ) -> list[tuple[int, int, list[tuple[int, int]]]]:
        """(start, end, sentence spans) of each chunk of `text[span]`."""
        sentences = [
            piece
            for sentence in sentence_spans(text, *span)
            for piece in split_long_span(text, sentence, self.chunk_size)
        ]
        packed = []
        first = 0
        while first < len(sentences):
            last = first
            while (
                last + 1 < len(sentences)
                and sentences[last + 1][1] - sentences[first][0] <= self.chunk_size
            ):
                last += 1
            packed.append((sentences[first][0], sentences[last][1], sentences[first : last + 1]))
            if last + 1 >= len(sentences):
                break
            first = self._next_first(sentences, first, last)
        return packed

    def _next_first(self, sentences: list[tuple[int, int]], first: int, last: int) -> int:
        """Where the next chunk starts: at the earliest of the trailing sentences of this
        chunk that fit in the overlap, as long as the next sentence still fits after them."""
        end = sentences[last][1]
        following_end = sentences[last + 1][1]
        start = last + 1
        for candidate in range(last, first, -1):
            if end - sentences[candidate][0] > self.chunk_overlap:
                break
            if following_end - sentences[candidate][0] > self.chunk_size:
                break
            start = candidate
        return start


def segments(document: Document) -> list[Segment]:
    """The parts of the document text that chunks are cut from, in order: the text before
    the first heading (path ()), then each section's own text. Heading-only parent
    sections are left out (see the module docstring)."""
    text = document.text
    sections: Sequence[Section] = document.sections
    starts = [section.char_span[0] for section in sections]
    found: list[Segment] = []
    preamble_end = starts[0] if starts else len(text)
    if text[:preamble_end].strip():
        found.append(Segment((), _trimmed(text, 0, preamble_end)))
    for index, section in enumerate(sections):
        start = section.char_span[0]
        end = min(section.char_span[1], starts[index + 1]) if index + 1 < len(sections) else (
            section.char_span[1]
        )
        own = text[start:end].strip().rstrip("：:。；;")
        has_children = index + 1 < len(sections) and _is_below(sections[index + 1], section)
        if own == section.title and has_children:
            continue
        if text[start:end].strip():
            found.append(Segment(section.path, _trimmed(text, start, end)))
    return found


def table_header(text: str, start: int) -> str:
    """The header row of the table a chunk starting at `start` continues: the first row of
    the tab-separated lines that run into the chunk's first line, or "" when the chunk does
    not start inside a table or starts at its header."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", start)
    if "\t" not in text[line_start : line_end if line_end >= 0 else len(text)]:
        return ""
    header_start = line_start
    while header_start > 0:
        previous = text.rfind("\n", 0, header_start - 1) + 1
        if "\t" not in text[previous : header_start - 1]:
            break
        header_start = previous
    if header_start >= line_start:
        return ""
    return text[header_start : text.find("\n", header_start)].strip()


def _is_below(candidate: Section, parent: Section) -> bool:
    return (
        len(candidate.path) > len(parent.path)
        and candidate.path[: len(parent.path)] == parent.path
    )


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def chunk_documents(documents: Sequence[Document], settings: Settings) -> list[Chunk]:
    """All chunks of the documents, in document order, sized by `settings.corpus.chunk_size` and
    `settings.corpus.chunk_overlap`."""
    chunker = Chunker.from_settings(settings)
    return [chunk for document in documents for chunk in chunker.run(document)]
