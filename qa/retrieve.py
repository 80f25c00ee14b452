"""Hybrid retrieval: the candidates of any number of search backends fused, optionally
reranked."""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Literal

import numpy as np

from corpus.settings import Settings
from index import Index
from index.backends import SearchBackend, SearchFilters
from index.models import Hit


FusionMethod = Literal["weighted", "rrf"]


def fuse(
    runs: Mapping[str, Sequence[Hit]],
    weights: Mapping[str, float],
    method: FusionMethod = "weighted",
    rrf_k: int = 60,
) -> list[Hit]:
    """One Hit per chunk that any run returned, carrying every run's score and rank under
    the run's name, best first (ties by chunk id).

    - `weighted`: each run's scores min-max normalised, then the weighted sum (a run that
      did not return a chunk adds 0); ranx's `wsum` with `norm="min-max"`.
    - `rrf`: sum of weight / (rrf_k + rank); ranx's `rrf` when all weights are 1.

    Runs are added in the mapping's order, so the sum is the same float every time.
    tests/test_retrieval_seam.py checks both against `ranx.fuse` on the seed questions.

    :raises ValueError: for an unknown method.
    """
    if method not in ("weighted", "rrf"):
        raise ValueError(f"unknown fusion method {method!r}; expected 'weighted' or 'rrf'")
    # chunk id -> this run's contribution, written as the sums were before the seam (weight
    # times the normalised score; weight over k + rank), so fused scores stay the same floats
    contributions: dict[str, dict[str, float]] = {}
    chunks = {}
    scores: dict[str, dict[str, float]] = {}
    ranks: dict[str, dict[str, int]] = {}
    for name, hits in runs.items():
        weight = weights.get(name, 0.0)
        low = min((hit.score for hit in hits), default=0.0)
        spread = (max((hit.score for hit in hits), default=1.0) - low) or 1.0
        contributions[name] = {}
        for rank, hit in enumerate(hits, start=1):
            chunk_id = hit.chunk.chunk_id
            contributions[name][chunk_id] = (
                weight / (rrf_k + rank) if method == "rrf" else weight * (hit.score - low) / spread
            )
            chunks.setdefault(chunk_id, hit.chunk)
            scores.setdefault(chunk_id, {})[name] = hit.score
            ranks.setdefault(chunk_id, {})[name] = rank
    fused = []
    for chunk_id, chunk in chunks.items():
        total = 0.0
        for name in runs:
            if chunk_id in contributions[name]:
                total += contributions[name][chunk_id]
        fused.append(Hit(chunk=chunk, score=total, scores=scores[chunk_id], ranks=ranks[chunk_id]))
    fused.sort(key=lambda hit: (-hit.score, hit.chunk.chunk_id))
    return fused


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
    """Runs the configured retrieval mode: `bm25`, `dense` or `hybrid` (every backend of
    the index, fused with the tuned weights)."""

    def __init__(
        self,
        index: Index,
        settings: Settings,
        reranker: Reranker | None = None,
        backends: Mapping[str, SearchBackend] | None = None,
    ):
        """`backends` (by name, in fusion order) defaults to the index's, BM25 and dense;
        another source joins hybrid fusion with weight `weights[name]` (0 until set)."""
        self.index = index
        self.settings = settings
        if reranker is None and settings.qa.rerank_model:
            reranker = Reranker(settings.qa.rerank_model)
        self.reranker = reranker
        backends = dict(backends if backends is not None else index.backends)
        mode = settings.qa.retrieval_mode
        if mode == "hybrid":
            self.backends = backends
            self.weights = {"bm25": settings.qa.bm25_weight, "dense": settings.qa.dense_weight}
            self.method: FusionMethod = settings.qa.fusion
        else:
            # one retriever: its own order, scored 1 / (rrf_k + rank) as the single-source runs
            # have always been
            self.backends = {mode: backends[mode]}
            self.weights = {mode: 1.0}
            self.method = "rrf"

    def run(
        self,
        query: str,
        top_k: int | None = None,
        doc_ids: Collection[str] | None = None,
    ) -> list[Hit]:
        """The fused candidate list (longer than top_k: the answer step reads past it)."""
        settings = self.settings
        depth = max(settings.qa.candidate_k, top_k or settings.qa.top_k)
        filters = SearchFilters.of(doc_ids)
        runs = {name: backend.search(query, depth, filters) for name, backend in self.backends.items()}
        hits = fuse(runs, self.weights, self.method, settings.qa.rrf_k)
        if self.reranker is not None:
            head = self.reranker.rerank(query, hits[: settings.qa.rerank_top_n])
            hits = head + hits[settings.qa.rerank_top_n :]
        return hits
