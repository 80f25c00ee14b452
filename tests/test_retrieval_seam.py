"""The retrieval backend seam (issue 13, part 3): backends behind one small protocol, hits
with per-source scores, fusion over any number of lists equal to ranx's, BM25 by bm25s
equal to the BM25 formula the project tuned, chunks served by chunk id."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from eval.dataset import load_items
from index.backends import DenseStore, SearchBackend, SearchFilters, dense_store_type
from index.bm25 import Bm25Index
from index.dense import DenseIndex
from index.models import Hit
from index.store import _analyze_all
from qa.retrieve import Retriever, fuse


@pytest.fixture(scope="module")
def seed_questions() -> list[str]:
    return [item.question for item in load_items()][:60]


@pytest.fixture(scope="module")
def seed_terms(seed_index):
    chunk_terms, _ = _analyze_all(seed_index._analyzer, seed_index.chunks)
    return chunk_terms


def _reference_bm25(documents: list[list[str]], query: list[str], k1: float, b: float) -> np.ndarray:
    """Okapi BM25 with Lucene's idf, term by term from its definition."""
    count = len(documents)
    average = sum(len(d) for d in documents) / count
    frequency = Counter(term for d in documents for term in set(d))
    scores = np.zeros(count)
    for position, document in enumerate(documents):
        tf = Counter(document)
        for term in query:  # a repeated query term counts again
            if tf[term]:
                idf = math.log(1 + (count - frequency[term] + 0.5) / (frequency[term] + 0.5))
                norm = k1 * (1 - b + b * len(document) / average)
                scores[position] += idf * tf[term] * (k1 + 1) / (tf[term] + norm)
    return scores


def test_bm25s_scores_equal_the_bm25_formula_on_the_seed_corpus(seed_index, seed_terms, seed_questions):
    k1, b = 1.2, 0.75
    bm25 = Bm25Index.build(seed_terms, k1=k1, b=b)
    for question in seed_questions[:25]:
        terms = seed_index.analyze(question)
        expected = _reference_bm25(seed_terms, terms, k1, b)
        np.testing.assert_allclose(bm25.scores(terms), expected, rtol=2e-6, atol=1e-5)


def test_bm25_weight_mask_filter_equals_scoring_all_then_keeping_the_documents(
    seed_index, seed_terms, seed_questions
):
    bm25 = Bm25Index.build(seed_terms)
    allowed = seed_index.chunk_store.rows_of({"001", "003"})
    for question in seed_questions[:10]:
        terms = seed_index.analyze(question)
        everything = bm25.scores(terms)
        filtered = bm25.top_k(terms, 40, allowed)
        wanted = [int(p) for p in allowed if everything[p] > 0]
        wanted = sorted(wanted, key=lambda p: (-everything[p], p))[:40]
        assert [p for p, _ in filtered] == wanted


def _as_ranx_run(name: str, runs_by_question: dict[str, list[Hit]]):
    from ranx import Run

    return Run.from_dict(
        {q: {h.chunk.chunk_id: float(h.score) for h in hits} for q, hits in runs_by_question.items()},
        name=name,
    )


@pytest.mark.parametrize("method", ["weighted", "rrf"])
def test_fusion_equals_ranx_fuse_on_real_seed_queries(seed_index, seed_questions, method):
    ranx = pytest.importorskip("ranx")
    bm25_runs = {f"q{i}": seed_index.search_bm25(q, 40) for i, q in enumerate(seed_questions)}
    dense_runs = {f"q{i}": seed_index.search_dense(q, 40) for i, q in enumerate(seed_questions)}
    if method == "weighted":
        weights = {"bm25": 0.6, "dense": 0.2}  # the tuned settings
        expected = ranx.fuse(
            [_as_ranx_run("bm25", bm25_runs), _as_ranx_run("dense", dense_runs)],
            norm="min-max", method="wsum", params={"weights": [0.6, 0.2]},
        ).to_dict()
    else:
        weights = {"bm25": 1.0, "dense": 1.0}  # ranx's rrf has no weights
        expected = ranx.fuse(
            [_as_ranx_run("bm25", bm25_runs), _as_ranx_run("dense", dense_runs)],
            norm=None, method="rrf", params={"k": 60},
        ).to_dict()
    for query_id in bm25_runs:
        ours = fuse({"bm25": bm25_runs[query_id], "dense": dense_runs[query_id]}, weights, method, 60)
        theirs = expected[query_id]
        assert {h.chunk.chunk_id for h in ours} == set(theirs)
        for hit in ours:
            assert hit.score == pytest.approx(theirs[hit.chunk.chunk_id], abs=1e-6)
        # the same order wherever the scores are not tied
        ranked = sorted(theirs, key=lambda chunk_id: (-theirs[chunk_id], chunk_id))
        assert [h.chunk.chunk_id for h in ours][:10] == ranked[:10]


def test_hybrid_hits_carry_each_sources_score_and_rank(seed_index, seed_settings):
    hits = Retriever(seed_index, seed_settings).run("虹桥国际开放枢纽包括哪些区域", 5)
    bm25 = {h.chunk.chunk_id: h for h in seed_index.search_bm25("虹桥国际开放枢纽包括哪些区域", 40)}
    top = hits[0]
    assert set(top.scores) <= {"bm25", "dense"} and top.scores
    if "bm25" in top.scores:
        assert top.scores["bm25"] == bm25[top.chunk.chunk_id].score
        assert top.ranks["bm25"] == bm25[top.chunk.chunk_id].ranks["bm25"]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


class KeywordBackend:
    """A third source: chunks whose text holds the query's last two characters."""

    name = "keyword"

    def __init__(self, index):
        self.index = index

    def search(self, query, k, filters=None):
        needle = query.rstrip("？?")[-2:]
        chunks = [c for c in self.index.chunks if needle in c.text]
        if filters and filters.doc_ids is not None:
            chunks = [c for c in chunks if c.doc_id in filters.doc_ids]
        return [
            Hit(chunk=c, score=1.0 / rank, scores={self.name: 1.0 / rank}, ranks={self.name: rank})
            for rank, c in enumerate(chunks[:k], start=1)
        ]


def test_fusion_takes_any_number_of_backends(seed_index, seed_settings):
    keyword = KeywordBackend(seed_index)
    assert isinstance(keyword, SearchBackend)
    backends = {**seed_index.backends, "keyword": keyword}
    retriever = Retriever(seed_index, seed_settings, backends=backends)
    retriever.weights = {**retriever.weights, "keyword": 0.5}
    hits = retriever.run("如何发展离岸贸易？", 5, doc_ids={"001", "002", "003"})
    assert any("keyword" in hit.scores for hit in hits)
    assert {hit.chunk.doc_id for hit in hits} <= {"001", "002", "003"}
    plain = Retriever(seed_index, seed_settings).run("如何发展离岸贸易？", 5, doc_ids={"001", "002", "003"})
    assert [h.score for h in hits] != [h.score for h in plain]  # the third source counted


def test_the_index_backends_implement_the_protocols(seed_index):
    assert isinstance(seed_index.bm25, SearchBackend) and isinstance(seed_index.dense, SearchBackend)
    assert list(seed_index.backends) == ["bm25", "dense"]
    assert isinstance(seed_index.dense.dense, DenseStore)
    assert dense_store_type("faiss") is DenseIndex
    with pytest.raises(ValueError, match="unknown vector store"):
        dense_store_type("nosuch")


def test_chunks_and_sentence_terms_are_served_by_chunk_id(seed_index):
    store = seed_index.chunk_store
    hit = seed_index.search_dense("如何发展离岸贸易？", 3)[0]
    assert store.get(hit.chunk.chunk_id) == hit.chunk
    terms = store.sentence_terms(hit.chunk.chunk_id)
    assert len(terms) == len(hit.chunk.sentences)
    start, end = hit.chunk.sentences[0]
    assert terms[0] == seed_index.analyze(hit.chunk.text[start:end])
    with pytest.raises(KeyError):
        store.get("no-such-chunk")
    assert store.rows_of(["no-such-doc"]).size == 0 and store.rows_of(None) is None


def test_filters_of_a_single_id_and_of_nothing():
    assert SearchFilters.of("001").doc_ids == frozenset({"001"})
    assert SearchFilters.of(None).doc_ids is None
    assert SearchFilters.of([]).doc_ids == frozenset()
