"""The Milvus dense backend (issue 13, part 4), for real: the seed index built into Milvus
Lite in a temporary directory, compared with the FAISS flat index built from the same
cached vectors; one shared Milvus (a `milvus-lite server` process) read by a second process,
as replicas do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from corpus.settings import PROJECT_ROOT, Settings

pytest.importorskip("pymilvus")

QUESTIONS = [
    json.loads(line)["question"]
    for line in (PROJECT_ROOT / "eval" / "data" / "seed_qa.jsonl").read_text(encoding="utf-8").splitlines()[:12]
]


@pytest.fixture(scope="module")
def milvus_settings(tmp_path_factory: pytest.TempPathFactory, seed_settings: Settings) -> Settings:
    work = tmp_path_factory.mktemp("milvus")
    return seed_settings.model_copy(update={
        "index_dir": work / "index", "data_dir": work, "vector_store": "milvus",
        "milvus_uri": str(work / "milvus.db"), "milvus_collection": "seedtest",
    })


@pytest.fixture(scope="module")
def milvus_index(milvus_settings: Settings, seed_index):
    from index import Index, build_index

    build_index(milvus_settings, progress=False)
    return Index.load(milvus_settings.index.index_dir, milvus_settings)


def _ids(hits) -> list[str]:
    return [hit.chunk.chunk_id for hit in hits]


def test_milvus_index_records_its_collection_not_its_token(milvus_index, milvus_settings):
    assert milvus_index.manifest["vector_store"] == "milvus"
    pointer = json.loads((milvus_settings.index.index_dir / "milvus.json").read_text(encoding="utf-8"))
    assert pointer["collection"].startswith("seedtest_")
    assert pointer["size"] == len(milvus_index.chunks)
    assert not (milvus_settings.index.index_dir / "dense.faiss").exists()


def test_milvus_dense_hits_equal_faiss_flat_top_hits(milvus_index, seed_index):
    assert seed_index.manifest["dense_index"] == "flat"
    for question in QUESTIONS:
        vector = seed_index.embed_query(question)
        faiss_hits = seed_index.search_dense(vector, 10)
        milvus_hits = milvus_index.search_dense(vector, 10)
        assert _ids(milvus_hits) == _ids(faiss_hits), question
        np.testing.assert_allclose([h.score for h in milvus_hits], [h.score for h in faiss_hits],
                                   atol=1e-5)


def test_milvus_doc_filter_returns_only_those_documents(milvus_index, seed_index):
    doc_ids = sorted({chunk.doc_id for chunk in seed_index.chunks})
    assert len(doc_ids) >= 3
    for question in QUESTIONS[:4]:
        vector = seed_index.embed_query(question)
        # one document (`row in [...]`), and all but one (`row not in [...]`)
        for allowed in ([doc_ids[1]], doc_ids[1:]):
            milvus_hits = milvus_index.search_dense(vector, 8, allowed)
            assert {hit.chunk.doc_id for hit in milvus_hits} <= set(allowed)
            assert _ids(milvus_hits) == _ids(seed_index.search_dense(vector, 8, allowed))
            assert len(milvus_hits) == 8
    assert milvus_index.search_dense(seed_index.embed_query(QUESTIONS[0]), 5, []) == []
    assert milvus_index.search_dense(seed_index.embed_query(QUESTIONS[0]), 5, ["no-such-doc"]) == []


def test_assistant_answers_the_same_with_vector_store_milvus(milvus_index, milvus_settings, assistant):
    from qa import Assistant

    milvus_assistant = Assistant.over(milvus_index, milvus_settings)
    for question in QUESTIONS[:3]:
        expected = assistant.ask(question).to_dict()
        answer = milvus_assistant.ask(question).to_dict()
        for volatile in ("answer_id", "latency_ms", "index_version"):
            expected.pop(volatile, None)
            answer.pop(volatile, None)
        # Milvus returns the same float32 inner products, rounded once more on the way: the
        # fused scores shown (6 decimals) may differ in the last digit, nothing else may.
        for part in ("passages", "citations"):
            scores = [item.pop("score", None) for item in answer.get(part) or []]
            expected_scores = [item.pop("score", None) for item in expected.get(part) or []]
            assert scores == pytest.approx(expected_scores, abs=2e-6)
        assert answer == expected, question
        assert answer["answered"] is True


def test_index_whose_collection_is_gone_is_refused_in_chinese(tmp_path, milvus_settings):
    import shutil

    from index import Index, IndexLoadError
    from index.milvus import connect

    copy = tmp_path / "index"
    shutil.copytree(milvus_settings.index.index_dir, copy)
    pointer = json.loads((copy / "milvus.json").read_text(encoding="utf-8"))
    assert connect(milvus_settings).has_collection(pointer["collection"])
    # the copy names a collection Milvus does not hold (dropped, or another Milvus)
    pointer["collection"] = "seedtest_20000101000000000000_deadbeef"
    (copy / "milvus.json").write_text(json.dumps(pointer), encoding="utf-8")
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    from index.store import _sha256_file

    manifest["files"]["milvus.json"] = _sha256_file(copy / "milvus.json")
    (copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IndexLoadError, match="向量库中没有该索引的集合"):
        Index.load(copy, milvus_settings)


def test_each_build_writes_a_new_collection_and_keeps_the_newest_three(tmp_path):
    from index.milvus import KEEP_BUILDS, MilvusDenseStore, build_collections, connect

    settings = Settings(data_dir=tmp_path, milvus_uri=str(tmp_path / "m.db"),
                        milvus_collection="gc", vector_store="milvus")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    stores = []
    for _ in range(KEEP_BUILDS + 1):
        stores.append(MilvusDenseStore.build(vectors, settings))
    names = build_collections(connect(settings), "gc")
    assert names == [store.collection for store in stores[1:]]
    # a replica still holding the previous build keeps searching it
    assert stores[-2].top_k(vectors[3], 1)[0][0] == 3
    ranked = stores[-1].top_k(vectors[7], 5)
    exact = np.argsort(-(vectors @ vectors[7]), kind="stable")[:5]
    assert [row for row, _ in ranked] == exact.tolist()


@pytest.mark.parametrize(("kind", "index_type"), [("hnsw", "HNSW"), ("ivf", "IVF_FLAT")])
def test_large_builds_get_the_measured_index_type(tmp_path, monkeypatch, kind, index_type):
    """The cut-over (index.dense.dense_index_kind) picks Milvus's index type too; forced
    here, since a real 100k or 1M build is a benchmark, not a test."""
    import index.dense
    from index.milvus import MilvusDenseStore

    monkeypatch.setattr(index.dense, "dense_index_kind", lambda size: kind)
    settings = Settings(data_dir=tmp_path, milvus_uri=str(tmp_path / "m.db"),
                        milvus_collection="kinds", vector_store="milvus")
    vectors = np.random.default_rng(1).standard_normal((300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = MilvusDenseStore.build(vectors, settings)
    assert store.index_type == index_type
    assert store.top_k(vectors[42], 3)[0][0] == 42


def test_replicas_share_one_milvus_server(tmp_path, seed_settings, seed_index):
    """A builder writes into a shared Milvus (here `milvus-lite server`, in production a
    Milvus standalone or cluster); another process loads the same read-only index directory
    against that server and gets the same hits."""
    from index import Index, build_index
    from ui.server import free_port

    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "milvus-lite"), "server", "--data-dir",
         str(tmp_path / "milvus-data"), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        uri = f"http://127.0.0.1:{port}"
        settings = seed_settings.model_copy(update={
            "index_dir": tmp_path / "index", "data_dir": tmp_path, "vector_store": "milvus",
            "milvus_uri": uri, "milvus_collection": "shared",
        })
        deadline = time.monotonic() + 60
        while True:
            try:
                build_index(settings, progress=False)
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(1)
        question = QUESTIONS[0]
        expected = _ids(Index.load(settings.index.index_dir, settings).search_dense(question, 5))
        assert expected == _ids(seed_index.search_dense(question, 5))
        replica = subprocess.run(
            [sys.executable, "-c",
             "import json, sys; from corpus.settings import Settings; from index import Index; "
             "s = Settings(); i = Index.load(s.index.index_dir, s); "
             "print(json.dumps([h.chunk.chunk_id for h in i.search_dense(sys.argv[1], 5)]))",
             question],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, "POLICYQA_INDEX_DIR": str(settings.index.index_dir),
                 "POLICYQA_DATA_DIR": str(tmp_path), "POLICYQA_CACHE_DIR": str(settings.index.cache_dir),
                 "POLICYQA_VECTOR_STORE": "milvus", "POLICYQA_MILVUS_URI": uri},
        )
        assert replica.returncode == 0, replica.stderr[-2000:]
        assert json.loads(replica.stdout.strip().splitlines()[-1]) == expected
    finally:
        server.terminate()
        server.wait(timeout=30)
