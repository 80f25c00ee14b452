"""The index layer: BM25 over jieba terms plus FAISS over passage embeddings, built once,
persisted atomically with a manifest, and loaded read-only for search."""

from index.embedders import Embedder, EmbedderError, make_embedder
from index.models import Hit
from index.rebuild import StagedIndex, build_staged, publish
from index.store import BuildReport, Index, IndexBuildError, IndexLoadError, build_index

__all__ = [
    "BuildReport",
    "Embedder",
    "EmbedderError",
    "Hit",
    "Index",
    "IndexBuildError",
    "IndexLoadError",
    "StagedIndex",
    "build_index",
    "build_staged",
    "make_embedder",
    "publish",
]
