"""Smoke test of `python -m eval.bench_scale --part dense` at a tiny size: every engine runs,
exact search is its own ground truth, and the report says what it measured."""

from __future__ import annotations

import json

import numpy as np

from eval import bench_scale


def test_mixture_is_seeded_normalised_and_clustered():
    sampler = bench_scale.MixtureSampler(dim=32, clusters=5, seed=3)
    first, again = sampler.sample(200, stream=0), bench_scale.MixtureSampler(32, 5, 3).sample(200, 0)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    queries = sampler.sample(20, stream=1)
    assert not np.array_equal(queries, first[:20])
    # a point is far closer to its nearest neighbour than to a random point
    similarities = queries @ first.T
    assert similarities.max(axis=1).mean() > similarities.mean() + 0.3


def test_recall_counts_only_true_neighbours():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    found = np.array([[3, 2, 9], [-1, 4, 7]])
    assert bench_scale.recall_at_k(found, truth, k=3) == 3 / 6


def test_dense_part_runs_every_engine_at_a_tiny_size(tmp_path):
    output = tmp_path / "dense.json"
    status = bench_scale.main([
        "--part", "dense", "--sizes", "3000", "--dim", "32", "--clusters", "20",
        "--queries", "40", "--latency-queries", "5", "--work-dir", str(tmp_path),
        "--engines", "faiss-flat,faiss-hnsw,faiss-ivf,milvus-hnsw,milvus-flat",
        "--output", str(output),
    ])
    assert status == 0
    report = json.loads(output.read_text(encoding="utf-8"))
    assert report["complete"] is True
    engines = {e["engine"]: e for e in report["dense"]["sizes"][0]["engines"]}
    assert set(engines) == {"faiss-flat", "faiss-hnsw", "faiss-ivf", "milvus-hnsw", "milvus-flat"}
    assert engines["faiss-flat"]["search"][0]["recall_at_10"] == 1.0
    assert engines["milvus-flat"]["search"][0]["recall_at_10"] == 1.0
    for figures in engines.values():
        for search in figures["search"]:
            assert 0.5 <= search["recall_at_10"] <= 1.0
            assert search["p50_ms"] > 0
    assert [s["efSearch"] for s in engines["faiss-hnsw"]["search"]] == list(bench_scale.HNSW_EF_SEARCH)

