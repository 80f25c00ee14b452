"""Nearest neighbours over L2-normalised passage vectors (inner product = cosine): the
default `index.backends.DenseStore`, FAISS in process."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from index.bm25 import top_positions

if TYPE_CHECKING:
    from corpus.settings import Settings

DENSE_FILE = "dense.faiss"
# The cut-over, from `python -m eval.bench_scale --part dense` (README, "Scale"): exact
# search (IndexFlatIP) costs n * dim multiply-adds per query, 6 ms at 100k vectors with no
# recall loss and no training; from 100k HNSW (M 32, efSearch 128) answers in 0.5 ms at
# recall 0.957; at 1M HNSW fell to recall 0.880 while IVF-flat (4 * sqrt(n) cells, 16
# probed) kept 1.000 at 0.3 ms and built in half the time, so from 1M the index is IVF.
HNSW_THRESHOLD = 100_000
IVF_THRESHOLD = 1_000_000
HNSW_NEIGHBOURS = 32
HNSW_EF_SEARCH = 128
IVF_PROBES = 16
IVF_TRAIN_POINTS_PER_LIST = 64  # k-means on a sample: FAISS warns below ~39 per list


def dense_index_kind(
    chunks: int, hnsw_threshold: int = HNSW_THRESHOLD, ivf_threshold: int = IVF_THRESHOLD
) -> str:
    """The index type for `chunks` passages: "flat", "hnsw" or "ivf". Milvus builds use it
    too."""
    if chunks >= ivf_threshold:
        return "ivf"
    return "hnsw" if chunks >= hnsw_threshold else "flat"


def ivf_lists(chunks: int) -> int:
    """IVF cells for `chunks` vectors: 4 * sqrt(n), FAISS's guideline up to a few million."""
    return max(1, int(round(4 * math.sqrt(chunks))))


class DenseIndex:
    """A FAISS index plus the vectors it holds (kept in memory for filtered search).

    FAISS search is const, and the vectors are read-only, so concurrent callers are safe.
    """

    def __init__(self, index: faiss.Index) -> None:
        self.index = index
        self.dim = index.d
        if isinstance(index, faiss.IndexHNSW):
            index.hnsw.efSearch = HNSW_EF_SEARCH
        elif isinstance(index, faiss.IndexIVF):
            index.nprobe = IVF_PROBES
            index.make_direct_map()  # reconstruct_n needs it
        self.vectors = index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros(
            (0, index.d), dtype=np.float32
        )

    @property
    def size(self) -> int:
        return self.index.ntotal

    @property
    def kind(self) -> str:
        if isinstance(self.index, faiss.IndexHNSW):
            return "hnsw"
        return "ivf" if isinstance(self.index, faiss.IndexIVF) else "flat"

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        settings: "Settings | None" = None,
        hnsw_threshold: int = HNSW_THRESHOLD,
        ivf_threshold: int = IVF_THRESHOLD,
    ) -> "DenseIndex":
        """Row i holds `vectors[i]`; `settings` is unused (FAISS needs no connection).

        :raises ValueError: when `vectors` is not a 2-D array."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"expected a (n, dim) array, got shape {vectors.shape}")
        dim = vectors.shape[1]
        kind = dense_index_kind(len(vectors), hnsw_threshold, ivf_threshold)
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        elif kind == "ivf":
            lists = ivf_lists(len(vectors))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
            sample = np.random.default_rng(0).permutation(len(vectors))[: lists * IVF_TRAIN_POINTS_PER_LIST]
            index.train(vectors[np.sort(sample)])
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
