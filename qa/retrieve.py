"""Hybrid retrieval: BM25 and dense candidates fused, optionally reranked."""

from __future__ import annotations

import threading
from dataclasses import replace
from collections.abc import Collection

import numpy as np

from corpus.settings import Settings
from index import Index
from index.models import Hit


def _merge(bm25_hits: list[Hit], dense_hits: list[Hit], score_of) -> list[Hit]:
    """One Hit per chunk found by either list, carrying both retrievers' scores and ranks,
    scored by `score_of(bm25_rank, bm25_score, dense_rank, dense_score)`, best first."""
    bm25 = {hit.chunk.chunk_id: (rank, hit) for rank, hit in enumerate(bm25_hits, start=1)}
    dense = {hit.chunk.chunk_id: (rank, hit) for rank, hit in enumerate(dense_hits, start=1)}
    merged = []
    for chunk_id in bm25.keys() | dense.keys():
        bm25_rank, bm25_hit = bm25.get(chunk_id, (None, None))
        dense_rank, dense_hit = dense.get(chunk_id, (None, None))
        bm25_score = bm25_hit.score if bm25_hit else None
        dense_score = dense_hit.score if dense_hit else None
        merged.append(
            Hit(
                chunk=(bm25_hit or dense_hit).chunk,
                score=score_of(bm25_rank, bm25_score, dense_rank, dense_score),
                bm25_score=bm25_score,
                dense_score=dense_score,
                bm25_rank=bm25_rank,
                dense_rank=dense_rank,
            )
        )
    merged.sort(key=lambda hit: (-hit.score, hit.chunk.chunk_id))
    return merged


def reciprocal_rank_fusion(
    bm25_hits: list[Hit], dense_hits: list[Hit], *, k: int, bm25_weight: float, dense_weight: float
) -> list[Hit]:
    """score = w_bm25 / (k + rank_bm25) + w_dense / (k + rank_dense); a list that did not
    return a chunk contributes nothing."""

    def score(bm25_rank, _bm25_score, dense_rank, _dense_score) -> float:
        return (bm25_weight / (k + bm25_rank) if bm25_rank else 0.0) + (
            dense_weight / (k + dense_rank) if dense_rank else 0.0
        )

    return _merge(bm25_hits, dense_hits, score)


def weighted_score_fusion(
    bm25_hits: list[Hit], dense_hits: list[Hit], *, bm25_weight: float, dense_weight: float
) -> list[Hit]:
    """Scores min-max normalised per list, then a weighted sum (missing counts as 0)."""

    def bounds(hits: list[Hit]) -> tuple[float, float]:
        if not hits:
            return 0.0, 1.0
        low, high = min(hit.score for hit in hits), max(hit.score for hit in hits)
        return low, (high - low) or 1.0

    bm25_low, bm25_spread = bounds(bm25_hits)
    dense_low, dense_spread = bounds(dense_hits)

    def score(_bm25_rank, bm25_score, _dense_rank, dense_score) -> float:
        total = 0.0
        if bm25_score is not None:
            total += bm25_weight * (bm25_score - bm25_low) / bm25_spread
        if dense_score is not None:
            total += dense_weight * (dense_score - dense_low) / dense_spread
        return total

    return _merge(bm25_hits, dense_hits, score)


class Reranker:
    """A sentence-transformers CrossEncoder over (query, passage) pairs, loaded on first use."""

    def __init__(self, model: str):
        self.model_name = model
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                from sentence_transformers import CrossEncoder

                self._model = CrossEncoder(self.model_name, device="cpu")
        return self._model

    def rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        if not hits:
            return hits
        model = self._load()
        scores = model.predict([(query, hit.chunk.text) for hit in hits], show_progress_bar=False)
        scores = np.asarray(scores, dtype=np.float64).reshape(len(hits), -1)[:, -1]
        order = np.argsort(-scores, kind="stable")
        return [replace(hits[i], score=float(scores[i])) for i in order]


class Retriever:
    """Runs the configured retrieval mode: `bm25`, `dense` or `hybrid` (fused)."""

    def __init__(self, index: Index, settings: Settings, reranker: Reranker | None = None):
        self.index = index
        self.settings = settings
        if reranker is None and settings.rerank_model:
            reranker = Reranker(settings.rerank_model)
        self.reranker = reranker

    def run(
        self,
        query: str,
        top_k: int | None = None,
        doc_ids: Collection[str] | None = None,
        query_vector: np.ndarray | None = None,
    ) -> list[Hit]:
        """The fused candidate list (longer than top_k: the answer step reads past it)."""
        settings = self.settings
        depth = max(settings.candidate_k, top_k or settings.top_k)
        mode = settings.retrieval_mode
        bm25_hits = self.index.search_bm25(query, depth, doc_ids) if mode != "dense" else []
        if mode != "bm25":
            vector = query_vector if query_vector is not None else self.index.embed_query(query)
            dense_hits = self.index.search_dense(vector, depth, doc_ids)
        else:
            dense_hits = []
        if mode == "bm25":
            hits = reciprocal_rank_fusion(
                bm25_hits, [], k=settings.rrf_k, bm25_weight=1.0, dense_weight=0.0
            )
        elif mode == "dense":
            hits = reciprocal_rank_fusion(
                [], dense_hits, k=settings.rrf_k, bm25_weight=0.0, dense_weight=1.0
            )
        elif settings.fusion == "rrf":
            hits = reciprocal_rank_fusion(
                bm25_hits, dense_hits, k=settings.rrf_k,
                bm25_weight=settings.bm25_weight, dense_weight=settings.dense_weight,
            )
        else:
            hits = weighted_score_fusion(
                bm25_hits, dense_hits,
                bm25_weight=settings.bm25_weight, dense_weight=settings.dense_weight,
            )
        if self.reranker is not None:
            head = self.reranker.rerank(query, hits[: settings.rerank_top_n])
            hits = head + hits[settings.rerank_top_n :]
        return hits
