"""Data classes at the index seam."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from corpus.models import Chunk


@dataclass(frozen=True)
class Hit:
    """A chunk retrieved for a query. `score` is the retriever's (or the fusion's) score.
    `scores` and `ranks` hold each source's own score and 1-based rank by source name
    ("bm25", "dense", ...); a source that did not return the chunk has no entry."""

    chunk: Chunk
    score: float
    scores: Mapping[str, float] = field(default_factory=dict)
    ranks: Mapping[str, int] = field(default_factory=dict)
