"""Passage embeddings cached by (embedder, sha256 of the exact text embedded).

One SQLite file per embedder in `settings.index.cache_dir`. SQLite gives what two processes
building at once need: each batch of vectors is written in one transaction, readers never
see half a batch, and writers wait for each other (WAL journal, busy timeout).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

_BUSY_TIMEOUT_S = 60.0
_LOOKUP_BATCH = 500  # below SQLite's default limit on bound parameters


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Vectors of one embedder (named by `fingerprint`), dimension `dim`."""

    def __init__(self, cache_dir: Path, fingerprint: str, dim: int) -> None:
        self.dim = dim
        safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", fingerprint)
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.path = cache_dir / f"embeddings-{safe_name}.sqlite3"
        with self._connect() as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS vectors"
                " (text_sha256 TEXT PRIMARY KEY, vector BLOB NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S)

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors among `keys`; a vector of the wrong size counts as missing."""
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        connection = self._connect()
        try:
            for start in range(0, len(unique), _LOOKUP_BATCH):
                batch = unique[start : start + _LOOKUP_BATCH]
                marks = ",".join("?" * len(batch))
                rows = connection.execute(
                    f"SELECT text_sha256, vector FROM vectors WHERE text_sha256 IN ({marks})", batch
                )
                for key, blob in rows:
                    vector = np.frombuffer(blob, dtype=np.float32)
                    if vector.size == self.dim:
                        found[key] = vector
        finally:
            connection.close()
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        if not items:
            return
        rows = [
            (key, np.ascontiguousarray(vector, dtype=np.float32).tobytes())
            for key, vector in items.items()
        ]
        connection = self._connect()
        try:
            with connection:
                connection.executemany(
                    "INSERT OR REPLACE INTO vectors (text_sha256, vector) VALUES (?, ?)", rows
                )
        finally:
            connection.close()


def embed_with_cache(
    texts: Sequence[str],
    embed: Callable[[Sequence[str]], np.ndarray],
    cache: EmbeddingCache,
    batch_size: int = 16,
    progress: bool = False,
) -> tuple[np.ndarray, int, int]:
    """Vectors for `texts` in order, embedding only the texts the cache lacks, in batches
    (each batch is stored as soon as it is embedded, so an interrupted build keeps its work).

    Returns (vectors, embedded, cached): how many distinct texts were embedded now and how
    many came from the cache.
    """
    keys = [text_key(text) for text in texts]
    known = cache.get_many(keys)
    missing: dict[str, str] = {}
    for key, text in zip(keys, texts):
        if key not in known:
            missing.setdefault(key, text)
    cached = len(set(keys)) - len(missing)
    # Similar lengths batch together: less padding for an embedder that pads a batch.
    pending = sorted(missing.items(), key=lambda item: len(item[1]))
    bar = None
    if progress and pending:
        from tqdm import tqdm

        bar = tqdm(total=len(pending), desc="embedding", unit="passage")
    try:
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            vectors = embed([text for _, text in batch])
            if vectors.shape != (len(batch), cache.dim):
                raise ValueError(
                    f"embedder returned shape {vectors.shape}, expected {(len(batch), cache.dim)}"
                )
            new = {key: vector for (key, _), vector in zip(batch, vectors)}
            cache.put_many(new)
            known.update(new)
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    matrix = np.zeros((len(texts), cache.dim), dtype=np.float32)
    for position, key in enumerate(keys):
        matrix[position] = known[key]
    return matrix, len(pending), cached
