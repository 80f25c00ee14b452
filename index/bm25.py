"""BM25 over pre-analysed terms, stored as a term -> postings sparse matrix.

Our own few lines of numpy rather than bm25s: each posting already holds its final BM25
weight (idf times the saturated, length-normalised term frequency), so a query is a sum of
a handful of posting rows, and filtering by document is a mask over the score array
instead of a deeper search. Built once at `build` time, persisted, never rebuilt per query.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

BM25_ARRAYS = "bm25.npz"
BM25_VOCAB = "bm25_vocab.json"


class Bm25Index:
    """Okapi BM25 (Lucene's non-negative idf) over documents given as term lists.

    Read-only after construction, so `scores` and `top_k` are safe for concurrent callers.
    """

    def __init__(
        self,
        vocabulary: dict[str, int],
        indptr: np.ndarray,
        indices: np.ndarray,
        weights: np.ndarray,
        size: int,
        k1: float,
        b: float,
    ) -> None:
        # CSR layout: the postings of term t are documents indices[indptr[t]:indptr[t + 1]]
        # with BM25 weights weights[indptr[t]:indptr[t + 1]].
        if len(indptr) != len(vocabulary) + 1 or len(indices) != len(weights):
            raise ValueError("BM25 arrays do not match the vocabulary")
        self.vocabulary = vocabulary
        self.indptr = indptr
        self.indices = indices
        self.weights = weights
        self.size = size
        self.k1 = k1
        self.b = b

    @classmethod
    def build(
        cls, documents: Sequence[Sequence[str]], k1: float = 1.2, b: float = 0.75
    ) -> "Bm25Index":
        """:raises ValueError: when k1 or b is out of range."""
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        vocabulary: dict[str, int] = {}
        rows: list[int] = []
        columns: list[int] = []
        frequencies: list[int] = []
        lengths = np.zeros(len(documents), dtype=np.float64)
        for position, terms in enumerate(documents):
            lengths[position] = len(terms)
            for term, count in Counter(terms).items():
                rows.append(vocabulary.setdefault(term, len(vocabulary)))
                columns.append(position)
                frequencies.append(count)
        term_frequency = np.asarray(frequencies, dtype=np.float64)
        column = np.asarray(columns, dtype=np.int64)
        row = np.asarray(rows, dtype=np.int64)
        document_count = max(len(documents), 1)
        average_length = float(lengths.mean()) if len(documents) and lengths.mean() > 0 else 1.0
        document_frequency = np.bincount(row, minlength=len(vocabulary)).astype(np.float64)
        idf = np.log1p((document_count - document_frequency + 0.5) / (document_frequency + 0.5))
        norm = k1 * (1.0 - b + b * lengths[column] / average_length)
        weights = idf[row] * term_frequency * (k1 + 1.0) / (term_frequency + norm)
        order = np.lexsort((column, row))
        indptr = np.zeros(len(vocabulary) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(np.bincount(row, minlength=len(vocabulary)))
        return cls(
            vocabulary, indptr, column[order].astype(np.int32), weights[order].astype(np.float32),
            len(documents), k1, b,
        )

    def scores(self, terms: Sequence[str]) -> np.ndarray:
        """BM25 score of every document for the query terms (a repeated term counts again)."""
        scores = np.zeros(self.size, dtype=np.float32)
        for term, count in Counter(terms).items():
            term_id = self.vocabulary.get(term)
            if term_id is None:
                continue
            start, end = self.indptr[term_id], self.indptr[term_id + 1]
            scores[self.indices[start:end]] += count * self.weights[start:end]
        return scores

    def top_k(
        self, terms: Sequence[str], k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Up to k (position, score) pairs with score > 0, best first; `allowed` (sorted
        positions) restricts the candidates, so a filter still yields k hits when it can."""
        if k <= 0:
            return []
        scores = self.scores(terms)
        positions = np.flatnonzero(scores) if allowed is None else allowed[scores[allowed] > 0]
        return top_positions(positions, scores[positions], k)

    def save(self, directory: Path) -> list[str]:
        """Writes the arrays and vocabulary; returns the file names written."""
        with open(directory / BM25_ARRAYS, "wb") as handle:
            np.savez(
                handle,
                indptr=self.indptr,
                indices=self.indices,
                weights=self.weights,
                size=np.asarray([self.size], dtype=np.int64),
                params=np.asarray([self.k1, self.b], dtype=np.float64),
            )
        terms = [""] * len(self.vocabulary)
        for term, term_id in self.vocabulary.items():
            terms[term_id] = term
        (directory / BM25_VOCAB).write_text(json.dumps(terms, ensure_ascii=False), encoding="utf-8")
        return [BM25_ARRAYS, BM25_VOCAB]

    @classmethod
    def load(cls, directory: Path) -> "Bm25Index":
        with np.load(directory / BM25_ARRAYS, allow_pickle=False) as arrays:
            indptr, indices, weights = arrays["indptr"], arrays["indices"], arrays["weights"]
            size = int(arrays["size"][0])
            k1, b = (float(x) for x in arrays["params"])
        terms = json.loads((directory / BM25_VOCAB).read_text(encoding="utf-8"))
        vocabulary = {term: term_id for term_id, term in enumerate(terms)}
        return cls(vocabulary, indptr, indices, weights, size, k1, b)


def top_positions(
    positions: np.ndarray, candidate_scores: np.ndarray, k: int
) -> list[tuple[int, float]]:
    """The k best `positions` by their `candidate_scores`, best first; ties broken by
    position so results are deterministic."""
    if positions.size == 0 or k <= 0:
        return []
    if positions.size > k:
        keep = np.argpartition(-candidate_scores, k - 1)[:k]
        positions, candidate_scores = positions[keep], candidate_scores[keep]
    order = np.lexsort((positions, -candidate_scores))
    return [(int(positions[i]), float(candidate_scores[i])) for i in order]
