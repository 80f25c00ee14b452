"""Nearest neighbours over L2-normalised passage vectors (inner product = cosine): the
default `index.backends.DenseStore`, FAISS in process."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from index.bm25 import top_positions

if TYPE_CHECKING:
    from corpus.settings import Settings

DENSE_FILE = "dense.faiss"
# Exact search (IndexFlatIP) costs n * dim multiply-adds per query: microseconds for the
# seed corpus (~600 chunks), a few milliseconds at 100k chunks, with no recall loss and no
# training. Above ~100k chunks HNSW's logarithmic search is worth its approximate results
# and its bigger memory.
HNSW_THRESHOLD = 100_000
HNSW_NEIGHBOURS = 32
HNSW_EF_SEARCH = 128


def dense_index_kind(chunks: int, hnsw_threshold: int = HNSW_THRESHOLD) -> str:
    """The index type for `chunks` passages, "flat" or "hnsw": the cut-over measured by
    `python -m eval.bench_scale --part dense` (README, "Scale"). Milvus builds use it too."""
    return "hnsw" if chunks >= hnsw_threshold else "flat"


class DenseIndex:
    """A FAISS index plus the vectors it holds (kept in memory for filtered search).

    FAISS search is const, and the vectors are read-only, so concurrent callers are safe.
    """

    def __init__(self, index: faiss.Index) -> None:
        self.index = index
        self.dim = index.d
        self.vectors = index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros(
            (0, index.d), dtype=np.float32
        )
        if isinstance(index, faiss.IndexHNSW):
            index.hnsw.efSearch = HNSW_EF_SEARCH

    @property
    def size(self) -> int:
        return self.index.ntotal

    @property
    def kind(self) -> str:
        return "hnsw" if isinstance(self.index, faiss.IndexHNSW) else "flat"

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        settings: "Settings | None" = None,
        hnsw_threshold: int = HNSW_THRESHOLD,
    ) -> "DenseIndex":
        """Row i holds `vectors[i]`; `settings` is unused (FAISS needs no connection).

        :raises ValueError: when `vectors` is not a 2-D array."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"expected a (n, dim) array, got shape {vectors.shape}")
        dim = vectors.shape[1]
        if dense_index_kind(len(vectors), hnsw_threshold) == "hnsw":
            index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexFlatIP(dim)
        if len(vectors):
            index.add(vectors)
        return cls(index)

    def top_k(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Up to k (position, inner product) pairs, best first. With `allowed` (positions of
        the filtered documents) the search is exact over just those vectors: always k hits
        when they exist, and cheaper than asking FAISS for more and discarding."""
        if k <= 0 or self.size == 0:
            return []
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        if query.shape[1] != self.dim:
            raise ValueError(f"query has dimension {query.shape[1]}, index has {self.dim}")
        if allowed is not None:
            if allowed.size == 0:
                return []
            return top_positions(allowed, self.vectors[allowed] @ query[0], k)
        distances, labels = self.index.search(query, min(k, self.size))
        pairs = zip(labels[0], distances[0])
        return [(int(label), float(score)) for label, score in pairs if label >= 0]

    def save(self, directory: Path) -> list[str]:
        faiss.write_index(self.index, str(directory / DENSE_FILE))
        return [DENSE_FILE]

    @classmethod
    def load(cls, directory: Path, settings: "Settings | None" = None) -> "DenseIndex":
        return cls(faiss.read_index(str(directory / DENSE_FILE)))
