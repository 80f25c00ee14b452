"""Hybrid retrieval: BM25 and dense candidates fused, optionally reranked."""

from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import replace

import numpy as np

from corpus.settings import Settings
from index import Index
from index.models import Hit


def reciprocal_rank_fusion(
    bm25_hits: list[Hit], dense_hits: list[Hit], *, k: int, bm25_weight: float, dense_weight: float
) -> list[Hit]:
    """score = w_bm25 / (k + rank_bm25) + w_dense / (k + rank_dense); a list that did not
    return a chunk contributes nothing."""
    merged: dict[str, Hit] = {}
    scores: dict[str, float] = {}
    for weight, hits, is_bm25 in ((bm25_weight, bm25_hits, True), (dense_weight, dense_hits, False)):
        for rank, hit in enumerate(hits, start=1):
            chunk_id = hit.chunk.chunk_id
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight / (k + rank)
            known = merged.get(chunk_id, Hit(chunk=hit.chunk, score=0.0))
            if is_bm25:
                merged[chunk_id] = replace(known, bm25_score=hit.score, bm25_rank=rank)
            else:
                merged[chunk_id] = replace(known, dense_score=hit.score, dense_rank=rank)
    fused = [replace(hit, score=scores[cid]) for cid, hit in merged.items()]
    fused.sort(key=lambda hit: (-hit.score, hit.chunk.chunk_id))
    return fused


def weighted_score_fusion(
    bm25_hits: list[Hit], dense_hits: list[Hit], *, bm25_weight: float, dense_weight: float
) -> list[Hit]:
    """Scores min-max normalised per list, then a weighted sum (missing counts as 0)."""

    def normalised(hits: list[Hit]) -> dict[str, float]:
        if not hits:
            return {}
        values = np.array([hit.score for hit in hits], dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        spread = high - low or 1.0
        return {hit.chunk.chunk_id: (hit.score - low) / spread for hit in hits}

    bm25_norm, dense_norm = normalised(bm25_hits), normalised(dense_hits)
    fused = reciprocal_rank_fusion(bm25_hits, dense_hits, k=1, bm25_weight=1, dense_weight=1)
    rescored = [
        replace(
            hit,
            score=bm25_weight * bm25_norm.get(hit.chunk.chunk_id, 0.0)
            + dense_weight * dense_norm.get(hit.chunk.chunk_id, 0.0),
        )
        for hit in fused
    ]
    rescored.sort(key=lambda hit: (-hit.score, hit.chunk.chunk_id))
    return rescored


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
