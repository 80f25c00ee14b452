"""The index layer's two seams: where passage vectors live, and what a retriever searches.

`DenseStore` is the dense backend: passage vectors keyed by *row*, where row i is chunk i
of the index's chunk store (`index.store.ChunkStore`). The FAISS store (`index.dense.DenseIndex`)
is the default; a new backend is one new file holding one class with this interface, plus
one line in `DENSE_STORES`. Rows are an internal key between the store and the index that
built it: everything above the index layer sees chunk ids only.

`SearchBackend` is what the retrieval step fuses: `search(query, k, filters) -> list[Hit]`,
one per source (`bm25`, `dense`, ...). Each hit carries its source's score and rank under
the source's `name` in `Hit.scores` / `Hit.ranks`, so fusion works over any number of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from index.models import Hit

if TYPE_CHECKING:
    from corpus.settings import Settings


@runtime_checkable
class DenseStore(Protocol):
    """Passage vectors (L2-normalised float32, inner product = cosine) keyed by row 0..size-1.

    - `build(vectors, settings)` (classmethod): a store holding `vectors[i]` as row i.
      It may write to an external service (Milvus), but nothing into the index directory:
      the index is assembled in a temporary directory and swapped in later.
    - `save(directory)`: writes the store's files (or a pointer to the external collection)
      into `directory`; returns the file names written, which the manifest checksums.
    - `load(directory, settings)` (classmethod): the store that `save` wrote.
    - `top_k(query, k, allowed)`: up to k `(row, inner product)` pairs, best first, ties by
      row. `allowed` (a sorted int64 array of rows, possibly empty) restricts the search to
      those rows and must still return k hits when that many exist; None searches all.
      Must be safe to call from concurrent threads.
    - `kind`: what the manifest records, e.g. "flat", "hnsw", "milvus".
    """

    @property
    def dim(self) -> int: ...

    @property
    def size(self) -> int: ...

    @property
    def kind(self) -> str: ...

    @classmethod
    def build(cls, vectors: np.ndarray, settings: "Settings | None" = None) -> "DenseStore": ...

    @classmethod
    def load(cls, directory: Path, settings: "Settings | None" = None) -> "DenseStore": ...

    def save(self, directory: Path) -> list[str]: ...

    def top_k(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]: ...


# name (the `vector_store` setting and the manifest's `vector_store`) -> "module:Class".
# Imported on first use, so a backend's library is needed only where it is chosen.
DENSE_STORES = {
    "faiss": "index.dense:DenseIndex",
    "milvus": "index.milvus:MilvusDenseStore",
}


def dense_store_type(name: str) -> type:
    """The `DenseStore` class registered as `name`.

    :raises ValueError: for an unknown name.
    """
    try:
        module_name, class_name = DENSE_STORES[name].split(":")
    except KeyError:
        raise ValueError(f"unknown vector store {name!r}; known: {', '.join(DENSE_STORES)}") from None
    return getattr(importlib.import_module(module_name), class_name)


@dataclass(frozen=True)
class SearchFilters:
    """What a search may return. `doc_ids`: only chunks of these documents (None: all;
    empty: nothing)."""

    doc_ids: frozenset[str] | None = None

    @classmethod
    def of(cls, doc_ids: Collection[str] | str | None) -> "SearchFilters":
        if doc_ids is None:
            return cls()
        return cls(frozenset([doc_ids] if isinstance(doc_ids, str) else doc_ids))


@runtime_checkable
class SearchBackend(Protocol):
    """One retrieval source. `search` returns up to k hits, best first, each with
    `scores[name]` (this source's score, also in `score`) and `ranks[name]` (1-based)."""

    name: str

    def search(self, query: str, k: int, filters: SearchFilters | None = None) -> list[Hit]: ...
