"""The chunks of an index, looked up by chunk id: what the answer step reads.

Search backends key their vectors and postings by row (row i is chunk i here); this store
turns rows into chunks and a document filter into rows, so nothing above the index layer
ever sees a row.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence

import numpy as np

from corpus.models import Chunk


class ChunkStore:
    """Read-only after construction, so safe for concurrent readers."""

    def __init__(self, chunks: Sequence[Chunk], sentence_terms: Sequence[list[list[str]]]) -> None:
        """:raises ValueError: when `sentence_terms` does not hold one entry per chunk."""
        if len(chunks) != len(sentence_terms):
            raise ValueError(f"{len(chunks)} chunks but {len(sentence_terms)} sentence-term lists")
        self.chunks = list(chunks)
        self._sentence_terms = list(sentence_terms)
        self._rows = {chunk.chunk_id: row for row, chunk in enumerate(self.chunks)}
        rows_by_doc: dict[str, list[int]] = {}
        for row, chunk in enumerate(self.chunks):
            rows_by_doc.setdefault(chunk.doc_id, []).append(row)
        self._rows_by_doc = {
            doc_id: np.asarray(rows, dtype=np.int64) for doc_id, rows in rows_by_doc.items()
        }

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self) -> Iterator[Chunk]:
        return iter(self.chunks)

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self._rows

    def get(self, chunk_id: str) -> Chunk:
        """:raises KeyError: for an unknown chunk id."""
        return self.chunks[self._rows[chunk_id]]

    def sentence_terms(self, chunk_id: str) -> list[list[str]]:
        """Analyzer terms of each span in the chunk's `sentences`, in order.

        :raises KeyError: for an unknown chunk id."""
        return self._sentence_terms[self._rows[chunk_id]]

    def row(self, chunk_id: str) -> int:
        """The chunk's row in the backends (index layer only). :raises KeyError:."""
        return self._rows[chunk_id]

    def at(self, row: int) -> Chunk:
        """The chunk a backend returned as `row` (index layer only)."""
        return self.chunks[row]

    def rows_of(self, doc_ids: Collection[str] | None) -> np.ndarray | None:
        """Sorted rows of the chunks of `doc_ids` (None: no filter, returns None)."""
        if doc_ids is None:
            return None
        arrays = [self._rows_by_doc[d] for d in set(doc_ids) if d in self._rows_by_doc]
        if not arrays:
            return np.zeros(0, dtype=np.int64)
        return np.sort(np.concatenate(arrays))
