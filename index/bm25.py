"""BM25 over pre-analysed terms (jieba tokens and bigrams from `index.analyzer`), by bm25s.

bm25s's eager index stores each posting's final weight, so a query is a sum of a handful
of posting rows. Its `atire` term-frequency part with the `lucene` idf is the Okapi BM25
this project tuned (idf = ln(1 + (N - df + 0.5) / (df + 0.5)), never negative, times
tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg_len))); bm25s's own `lucene` method
drops the (k1 + 1) factor. tests/test_retrieval_seam.py checks the scores against the
formula on the seed corpus. The document filter is bm25s's `weight_mask`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import bm25s
import numpy as np

# bm25s writes these names into the index directory (one directory, no sub-folders:
# the manifest checksums every file by name).
_FILES = {
    "data_name": "bm25_data.npy",
    "indices_name": "bm25_indices.npy",
    "indptr_name": "bm25_indptr.npy",
    "vocab_name": "bm25_vocab.json",
    "params_name": "bm25_params.json",
}
TERM_FREQUENCY_METHOD = "atire"
IDF_METHOD = "lucene"


class Bm25Index:
    """Okapi BM25 (Lucene's non-negative idf) over documents given as term lists.

    Read-only after construction, so `scores` and `top_k` are safe for concurrent callers.
    """

    def __init__(self, retriever: bm25s.BM25) -> None:
        self._retriever = retriever
        self.size = int(retriever.scores["num_docs"])
        self.k1 = float(retriever.k1)
        self.b = float(retriever.b)

    @property
    def vocabulary(self) -> dict[str, int]:
        return self._retriever.vocab_dict

    @classmethod
    def build(
        cls, documents: Sequence[Sequence[str]], k1: float = 1.2, b: float = 0.75
    ) -> "Bm25Index":
        """:raises ValueError: when k1 or b is out of range."""
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        retriever = bm25s.BM25(k1=k1, b=b, method=TERM_FREQUENCY_METHOD, idf_method=IDF_METHOD)
        # An empty document still needs one term, or bm25s's corpus type check fails on it;
        # "" is bm25s's own empty token, which no query term equals.
        retriever.index([list(terms) or [""] for terms in documents] or [[""]], show_progress=False)
        if not documents:
            retriever.scores["num_docs"] = 0
        return cls(retriever)

    def scores(self, terms: Sequence[str], allowed: np.ndarray | None = None) -> np.ndarray:
        """BM25 score of every document for the query terms (a repeated term counts again);
        with `allowed` (positions), every other document scores 0."""
        if self.size == 0:
            return np.zeros(0, dtype=np.float32)
        mask = None
        if allowed is not None:
            mask = np.zeros(self.size, dtype=np.float32)
            mask[allowed] = 1.0
        token_ids = self._retriever.get_tokens_ids([term for term in terms if term])
        return self._retriever.get_scores_from_ids(token_ids, weight_mask=mask)

    def top_k(
        self, terms: Sequence[str], k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Up to k (position, score) pairs with score > 0, best first, ties by position;
        `allowed` (positions) restricts the candidates, so a filter still yields k hits
        when it can."""
        if k <= 0 or self.size == 0 or (allowed is not None and allowed.size == 0):
            return []
        scores = self.scores(terms, allowed)
        positions = np.flatnonzero(scores > 0)
        return top_positions(positions, scores[positions], k)

    def save(self, directory: Path) -> list[str]:
        """Writes bm25s's arrays, vocabulary and parameters; returns the file names written."""
        self._retriever.save(directory, corpus=None, show_progress=False, **_FILES)
        return sorted(_FILES.values())

    @classmethod
    def load(cls, directory: Path) -> "Bm25Index":
        """:raises OSError: when a file is missing; ValueError: when one is unreadable."""
        directory = Path(directory)
        for name in _FILES.values():
            if not (directory / name).is_file():
                raise FileNotFoundError(f"BM25 file missing: {directory / name}")
        params = json.loads((directory / _FILES["params_name"]).read_text(encoding="utf-8"))
        retriever = bm25s.BM25.load(directory, show_progress=False, **_FILES)
        index = cls(retriever)
        index.size = int(params["num_docs"])
        return index


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
