"""Data classes at the index seam."""

from __future__ import annotations

from dataclasses import dataclass

from corpus.models import Chunk


@dataclass(frozen=True)
class Hit:
    """A chunk retrieved for a query. `score` is the retriever's (or the fusion's) score;
    the per-retriever scores and ranks are kept so fusion and refusal can use them."""

    chunk: Chunk
    score: float
    bm25_score: float | None = None
    dense_score: float | None = None
    bm25_rank: int | None = None  # 1-based, None when that retriever did not return it
    dense_rank: int | None = None
