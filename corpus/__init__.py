"""The corpus layer: load policy documents, clean them, find their sections, cut chunks.

    from corpus import load_corpus, chunk_documents
    from corpus.settings import settings

    loaded = load_corpus(settings)          # CorpusLoad(documents, errors)
    chunks = chunk_documents(loaded.documents, settings)
"""

from corpus.chunking import Chunker, chunk_documents
from corpus.loaders import (
    Catalogue,
    CatalogueError,
    CorpusLoad,
    DocumentLoadError,
    LoadError,
    load_corpus,
    load_file,
)
from corpus.text import fold

__all__ = [
    "Catalogue",
    "CatalogueError",
    "Chunker",
    "CorpusLoad",
    "DocumentLoadError",
    "LoadError",
    "chunk_documents",
    "fold",
    "load_corpus",
    "load_file",
]
