"""Index build and search benchmark.

Run with `python -m eval.bench_index` (about 1.5 min of CPU for the cold build; add
`--skip-cold` to time only a rebuild against the project's embedding cache). Measures, for
the corpus in settings.corpus.corpus_dir and the configured embedder:

- a cold build (fresh process, empty temporary embedding cache) and a warm rebuild
  (fresh process, nothing changed): seconds inside `build_index`, wall seconds including
  interpreter start and imports, and each child's peak resident memory (ru_maxrss);
- the index size on disk;
- BM25 and dense search latency, with and without a document filter, and the query
  embedding time, over a fixed list of questions.

Prints a table and writes eval/reports/bench_index.json with the settings, machine and git
commit that produced the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from corpus.settings import PROJECT_ROOT, Settings, settings as default_settings

REPORT_PATH = PROJECT_ROOT / "eval" / "reports" / "bench_index.json"
QUESTIONS = (
    "虹桥国际开放枢纽包括哪些区域？",
    "进博会的溢出效应体现在哪些方面？",
    "虹桥商务区的发展目标是什么？",
    "长三角一体化发展的总体要求",
    "如何建设国际化中央商务区",
    "数字贸易有哪些支持政策",
    "2025年要达到什么目标",
    "综合交通枢纽功能如何提升",
    "跨境电商 海关监管 便利化",
    "人才引进和出入境便利措施",
    "金融服务支持实体经济",
    "会展业 品牌展会",
    "保税展示交易常态化",
    "虹桥国际中央商务区的范围",
    "知识产权保护",
    "进口商品集散地",
    "新型国际贸易",
    "总部经济 企业集聚",
    "生态环境 绿色低碳",
    "组织实施和保障措施",
)


def _child_build(index_dir: str, cache_dir: str, corpus_dir: str, embedder: str) -> None:
    """Runs in a fresh interpreter: one build, then its figures as one JSON line."""
    from index import build_index

    build_settings = Settings(
        **{**default_settings.model_dump(), "index_dir": Path(index_dir),
           "cache_dir": Path(cache_dir), "corpus_dir": Path(corpus_dir), "embedder": embedder}
    )
    report = build_index(build_settings, progress=False)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "build_s": round(report.seconds, 3),
        "documents": report.documents,
        "sections": report.sections,
        "chunks": report.chunks,
        "embedded": report.embedded,
        "cached": report.cached,
        "load_errors": len(report.load_errors),
        # CPU seconds of the whole child (imports included): unlike wall time, barely
        # affected by other processes competing for the 2 cores.
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        # Linux reports ru_maxrss in KiB.
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }))


def run_build(index_dir: Path, cache_dir: Path, settings: Settings) -> dict:
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "eval.bench_index", "--child-build", str(index_dir), str(cache_dir),
         str(settings.corpus.corpus_dir), settings.index.embedder],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"build failed:\n{completed.stderr[-4000:]}")
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    figures["wall_s"] = round(time.perf_counter() - started, 3)
    return figures


def directory_mib(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 2)


def latency_ms(call, inputs, repeats: int) -> dict:
    for value in inputs[:3]:
        call(value)  # warm-up: lazy loads, caches
    timings = []
    for _ in range(repeats):
        for value in inputs:
            started = time.perf_counter()
            call(value)
            timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return {
        "calls": len(timings),
        "mean_ms": round(statistics.fmean(timings), 4),
        "p50_ms": round(timings[len(timings) // 2], 4),
        "p95_ms": round(timings[min(len(timings) - 1, int(len(timings) * 0.95))], 4),
    }


def search_latency(index_dir: Path, settings: Settings, k: int, repeats: int) -> dict:
    from index import Index

    index = Index.load(index_dir, settings)
    questions = list(QUESTIONS)
    vectors = [index.embed_query(q) for q in questions]
    some_docs = sorted({d.doc_id for d in index.documents})[:1]
    return {
        "k": k,
        "filter_doc_ids": some_docs,
        "bm25": latency_ms(lambda q: index.search_bm25(q, k), questions, repeats),
        "bm25_filtered": latency_ms(
            lambda q: index.search_bm25(q, k, some_docs), questions, repeats
        ),
        "dense_given_vector": latency_ms(lambda v: index.search_dense(v, k), vectors, repeats),
        "dense_given_vector_filtered": latency_ms(
            lambda v: index.search_dense(v, k, some_docs), vectors, repeats
        ),
        "embed_query": latency_ms(index.embed_query, questions, 1),
        "analyze": latency_ms(index.analyze, questions, repeats),
    }


def git_commit() -> str | None:
    completed = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    return completed.stdout.strip() or None if completed.returncode == 0 else None


def print_table(result: dict) -> None:
    rows = []
    for name in ("cold", "warm"):
        figures = result.get(name)
        if figures:
            rows.append((f"{name} build", f"{figures['build_s']:.2f} s in build_index, "
                         f"{figures['wall_s']:.2f} s wall, {figures['cpu_s']:.1f} s CPU; "
                         f"embedded {figures['embedded']}, "
                         f"cached {figures['cached']}; peak RSS {figures['peak_rss_mib']} MiB"))
    rows.append(("chunks", str(result["warm"]["chunks"])))
    rows.append(("load average", f"{result['load_average']['before']} before, "
                 f"{result['load_average']['after']} after"))
    rows.append(("index on disk", f"{result['index_mib']} MiB"))
    for name, figures in result["search"].items():
        if isinstance(figures, dict):
            rows.append((name, f"p50 {figures['p50_ms']:.3f} ms, p95 {figures['p95_ms']:.3f} ms, "
                         f"mean {figures['mean_ms']:.3f} ms ({figures['calls']} calls)"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval.bench_index", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--skip-cold", action="store_true",
                        help="no cold build; time a rebuild against settings.index.cache_dir instead")
    parser.add_argument("--repeats", type=int, default=50, help="passes over the questions")
    parser.add_argument("--k", type=int, default=40, help="hits per search (qa's candidate_k)")
    parser.add_argument("--output", type=Path, default=REPORT_PATH)
    parser.add_argument("--child-build", nargs=4, metavar=("INDEX", "CACHE", "CORPUS", "EMBEDDER"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_build:
        _child_build(*args.child_build)
        return 0

    settings = default_settings
    result: dict = {
        "benchmark": "index",
        "command": "python -m eval.bench_index" + (" --skip-cold" if args.skip_cold else ""),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
        "settings": {name: str(settings.flat_dump()[name]) for name in
                     ("corpus_dir", "embedder", "chunk_size", "chunk_overlap", "bm25_k1", "bm25_b",
                      "use_bigrams")},
        "load_average": {"before": [round(x, 2) for x in os.getloadavg()]},
        "cold": None,
    }
    with tempfile.TemporaryDirectory(prefix="bench-index-") as work:
        index_dir = Path(work) / "index"
        if args.skip_cold:
            cache_dir = settings.index.cache_dir
        else:
            cache_dir = Path(work) / "cache"
            print("cold build (empty embedding cache)...", flush=True)
            result["cold"] = run_build(index_dir, cache_dir, settings)
        print("warm rebuild (nothing changed)...", flush=True)
        result["warm"] = run_build(index_dir, cache_dir, settings)
        result["index_mib"] = directory_mib(index_dir)
        print("search latency...", flush=True)
        result["search"] = search_latency(index_dir, settings, args.k, args.repeats)
    result["load_average"]["after"] = [round(x, 2) for x in os.getloadavg()]
    print_table(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, ensure_ascii=False, indent=2) + "\n"
    args.output.write_text(text, encoding="utf-8")
    print(f"written {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
