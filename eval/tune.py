"""Sweep retrieval settings on the eval set's DEV part (never the test part).

    python -m eval.tune                       # fusion weights, rrf_k, fusion kind
    python -m eval.tune --grid index          # chunk size and bigrams: rebuilds an index per
                                              # variant under var/tune/ (embeddings cached)
    python -m eval.tune --grid bm25           # BM25 k1 and b, likewise

Query embeddings are memoised across the sweep, so each variant costs only BM25, fusion
and the answer step. Prints one row per variant, best hit@5 first; pick values for
`corpus/settings.py` from here and report them on the test part with `policyqa eval`.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
from pathlib import Path

from corpus.settings import Settings, settings as default_settings
from eval.dataset import load_items
from eval.metrics import summarize
from eval.runner import EvalRunner, load_or_build_index

FUSION_GRID = {
    "fusion": ["rrf"],
    "rrf_k": [10, 30, 60],
    "bm25_weight": [1.0, 1.5, 2.0, 3.0],
    "dense_weight": [1.0],
    "candidate_k": [40],
}
WEIGHTED_GRID = {
    "fusion": ["weighted"],
    "bm25_weight": [0.5, 0.6, 0.7, 0.8],
    "dense_weight": [0.5, 0.4, 0.3, 0.2],
}


def variants(grid: dict[str, list]) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


INDEX_GRID = [
    {"chunk_size": 200, "chunk_overlap": 40},
    {"chunk_size": 300, "chunk_overlap": 60},
    {"chunk_size": 400, "chunk_overlap": 80},
    {"chunk_size": 300, "chunk_overlap": 60, "use_bigrams": False},
]


BM25_GRID = [{"bm25_k1": k1, "bm25_b": b} for k1 in (0.9, 1.2, 1.5) for b in (0.5, 0.75, 0.9)]


def tune_index_settings(base: Settings, items, grid: list[dict]) -> None:
    """Settings that change the index itself: each variant gets its own index directory."""
    from index import build_index

    for update in grid:
        name = "-".join(f"{key}={value}" for key, value in update.items())
        variant = base.model_copy(update={**update, "index_dir": base.index.data_dir / "tune" / name})
        report = build_index(variant, progress=False)
        index = load_or_build_index(variant)
        results = EvalRunner(index, variant).run_config("hybrid", items)
        metrics = summarize(name, results)
        print(
            f"chunks {report.chunks:4d}  hit@1 {metrics.hit_at_1:.3f}  hit@5 {metrics.hit_at_5:.3f}  "
            f"MRR {metrics.mrr:.3f}  ans {metrics.answer_accuracy:.3f}  cite {metrics.citation_accuracy:.3f}  "
            f"med len {metrics.median_answer_chars:.0f}  {name}",
            flush=True,
        )


def memoise_query_embeddings(index) -> None:
    index.embed_query = functools.lru_cache(maxsize=4096)(index.embed_query)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-dir", type=Path, default=None)
    parser.add_argument("--grid", choices=["fusion", "modes", "index", "bm25"], default="fusion")
    parser.add_argument("--out", type=Path, default=None, help="write rows as JSON")
    args = parser.parse_args(argv)

    base: Settings = default_settings
    if args.index_dir:
        base = Settings(**{**base.model_dump(), "index_dir": args.index_dir})
    items = load_items(split="dev")
    if args.grid in ("index", "bm25"):
        tune_index_settings(base, items, INDEX_GRID if args.grid == "index" else BM25_GRID)
        return
    index = load_or_build_index(base)
    memoise_query_embeddings(index)

    if args.grid == "modes":
        grid = [{"retrieval_mode": m} for m in ("bm25", "dense", "hybrid")]
    else:
        grid = [{"retrieval_mode": "hybrid", **v} for v in variants(FUSION_GRID) + variants(WEIGHTED_GRID)]
    rows = []
    for update in grid:
        variant_settings = base.model_copy(update=update)
        runner = EvalRunner(index, variant_settings)
        results = runner.run_config(update["retrieval_mode"], items)
        metrics = summarize(json.dumps(update, ensure_ascii=False), results)
        rows.append(metrics)
        print(
            f"hit@1 {metrics.hit_at_1:.3f}  hit@5 {metrics.hit_at_5:.3f}  MRR {metrics.mrr:.3f}  "
            f"ans {metrics.answer_accuracy:.3f}  cite {metrics.citation_accuracy:.3f}  {metrics.config}",
            flush=True,
        )
    rows.sort(key=lambda m: (-(m.hit_at_5 or 0), -(m.mrr or 0)))
    print("\nbest:", rows[0].config)
    if args.out:
        args.out.write_text(
            json.dumps([m.__dict__ for m in rows], ensure_ascii=False, indent=1), encoding="utf-8"
        )


if __name__ == "__main__":
    main()
