"""Scale benchmark, part (a): the seed eval with real distractors (issue 13, part 5a).

    python -m eval.bench_scale_corpus                 # all ~2,850 distractor paragraphs
    python -m eval.bench_scale_corpus --limit 200     # a quick run
    python -m eval.bench_scale --part corpus          # the same, from the scale benchmark

Every paragraph of ../shared/data/cmrc2018 dev and of ../shared/data/drcd dev and test
(DRCD converted to simplified Chinese with OpenCC t2s) is added to the seed corpus as one
document each. Two indexes are built in a temporary directory, seed-only and seed plus
distractors, each in a child process so its peak memory (max RSS) is its own. Reported:
build time, passages embedded, index size, peak memory; the seed eval's hit@1, hit@5, MRR
and answer accuracy (hybrid) against both; query latency p50/p95 (hybrid retrieval with
the query embedded each time, the query cache off; the two indexes alternate question by
question so machine load hits both alike) and whole-answer p50. Targets: hit@5 drops by at
most 0.02; query p50 at most 1.5x seed-only.

`run(args) -> dict` is the entry point `eval.bench_scale` calls. It reads these attributes
of `args` where present (any namespace will do): `limit` (distractor paragraphs, None: all),
`split` (seed eval split, default "test"), `items` (only the first N eval items), `out` (directory for bench_scale_corpus.json;
None: write nothing, the caller saves the dict), `work_dir` (temporary files; default the
system's). Passage vectors go through the project's embedding cache (settings.index.cache_dir),
so a second run embeds nothing; `embedded` in the report says how many were embedded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from corpus.models import Document, Section
from corpus.settings import PROJECT_ROOT, Settings, settings as default_settings

DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
SOURCES = (  # (name, file, traditional Chinese?)
    ("cmrc2018-dev", DATA_DIR / "cmrc2018" / "cmrc2018_dev.json", False),
    ("drcd-dev", DATA_DIR / "drcd" / "DRCD_dev.json", True),
    ("drcd-test", DATA_DIR / "drcd" / "DRCD_test.json", True),
)
REPORT_NAME = "bench_scale_corpus.json"
TARGETS = {"hit_at_5_drop_at_most": 0.02, "query_p50_ratio_at_most": 1.5}


def distractor_documents(limit: int | None = None) -> list[Document]:
    """One Document per paragraph of the three files, in file order (the first `limit`)."""
    from eval.cmrc import load_cmrc
    from qa.reader_data import t2s

    convert = t2s()
    documents: list[Document] = []
    for name, path, traditional in SOURCES:
        for paragraph in load_cmrc(path).paragraphs:
            if limit is not None and len(documents) >= limit:
                return documents
            text = convert(paragraph.context) if traditional else paragraph.context
            title = (convert(paragraph.title) if traditional else paragraph.title) or name
            documents.append(
                Document(
                    doc_id=f"{name}-{paragraph.paragraph_id}",
                    title=title,
                    source_file=path.name,
                    text=text,
                    sections=(Section(path=(), char_span=(0, len(text))),),
                    kind="encyclopedia paragraph",
                )
            )
    return documents


def _build(settings: Settings, limit: int | None, with_distractors: bool, results) -> None:
    """Child process: builds one index and reports its figures and its own peak memory."""
    from corpus import load_corpus
    from index import build_index

    documents = list(load_corpus(settings).documents)
    distractors = distractor_documents(limit) if with_distractors else []
    started = time.perf_counter()
    report = build_index(settings, progress=False, documents=documents + distractors)
    results.put({
        "documents": report.documents,
        "distractor_documents": len(distractors),
        "chunks": report.chunks,
        "embedded": report.embedded,
        "cached": report.cached,
        "build_s": round(time.perf_counter() - started, 1),
        # Linux reports ru_maxrss in KiB
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    })


def build_in_child(settings: Settings, limit: int | None, with_distractors: bool) -> dict:
    """:raises RuntimeError: when the build process fails."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_build, args=(settings, limit, with_distractors, results))
    process.start()
    figures = results.get()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"index build failed (exit code {process.exitcode})")
    figures["index_mib"] = round(
        sum(p.stat().st_size for p in Path(settings.index.index_dir).iterdir() if p.is_file()) / 2**20, 1
    )
    return figures


def _query_latencies(retrievers: dict, questions: list[str]) -> dict[str, dict]:
    """Hybrid retrieval per question, the indexes alternating, after a short warm-up."""
    from eval.metrics import percentile

    for retriever in retrievers.values():
        for question in questions[:5]:
            retriever.run(question)
    timings: dict[str, list[float]] = {name: [] for name in retrievers}
    for question in questions:
        for name, retriever in retrievers.items():
            started = time.perf_counter()
            retriever.run(question)
            timings[name].append((time.perf_counter() - started) * 1000)
    return {
        name: {
            "p50_ms": round(percentile(values, 50), 2),
            "p95_ms": round(percentile(values, 95), 2),
            "queries": len(values),
        }
        for name, values in timings.items()
    }


def run(args: argparse.Namespace) -> dict:
    """Builds both indexes, runs the seed eval on each, times queries; returns the report
    (and writes it to `args.out`/bench_scale_corpus.json when `out` is set)."""
    from eval.dataset import load_items
    from eval.runner import EvalRunner, git_commit
    from index import Index
    from qa.retrieve import Retriever

    limit = getattr(args, "limit", None)
    split = getattr(args, "split", None) or "test"
    out = getattr(args, "out", None)
    work_parent = getattr(args, "work_dir", None)
    base: Settings = getattr(args, "settings", None) or default_settings
    items = load_items(split=None if split == "all" else split)
    if getattr(args, "items", None):
        items = items[: args.items]
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="policyqa-scale-", dir=work_parent))
    try:
        # the query cache off: every timed query is embedded, as a new question is
        settings = {
            name: base.model_copy(update={"index_dir": work / name, "query_cache_size": 0})
            for name in ("seed", "distractors")
        }
        builds = {}
        for name, with_distractors in (("seed", False), ("distractors", True)):
            print(f"building the {name} index ...", file=sys.stderr, flush=True)
            builds[name] = build_in_child(settings[name], limit, with_distractors)
            print(f"  {builds[name]}", file=sys.stderr, flush=True)
        indexes = {name: Index.load(s.index.index_dir, s) for name, s in settings.items()}
        evals = {}
        for name, index in indexes.items():
            print(f"seed eval ({split}, hybrid) on the {name} index ...", file=sys.stderr, flush=True)
            run_ = EvalRunner(index, settings[name]).run(
                items, ["hybrid"], name=f"scale-{name}", split=split, dataset="eval/data/seed_qa.jsonl"
            )
            row = run_.rows[0]
            evals[name] = {
                "items": row.items,
                "hit_at_1": row.hit_at_1,
                "hit_at_5": row.hit_at_5,
                "mrr": row.mrr,
                "answer_accuracy": row.answer_accuracy,
                "answer_p50_ms": row.latency_p50_ms,
                "answer_p95_ms": row.latency_p95_ms,
            }
            print(f"  {evals[name]}", file=sys.stderr, flush=True)
        retrievers = {name: Retriever(index, settings[name]) for name, index in indexes.items()}
        queries = _query_latencies(retrievers, [item.question for item in items])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    seed, large = evals["seed"], evals["distractors"]
    hit5_drop = round(seed["hit_at_5"] - large["hit_at_5"], 4)
    p50_ratio = round(queries["distractors"]["p50_ms"] / queries["seed"]["p50_ms"], 2)
    report = {
        "benchmark": "scale-corpus",
        "command": "python -m eval.bench_scale_corpus"
        + (f" --limit {limit}" if limit is not None else "")
        + (f" --split {split}" if split != "test" else "")
        + (f" --items {len(items)}" if getattr(args, "items", None) else ""),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "sources": [f"{name}: ../shared/data/{path.parent.name}/{path.name}" for name, path, _ in SOURCES],
        "distractor_limit": limit,
        "split": split,
        "builds": builds,
        "eval_hybrid": evals,
        "query_hybrid_uncached": queries,
        "hit_at_1_drop": round(seed["hit_at_1"] - large["hit_at_1"], 4),
        "hit_at_5_drop": hit5_drop,
        "answer_accuracy_drop": round(seed["answer_accuracy"] - large["answer_accuracy"], 4),
        "query_p50_ratio": p50_ratio,
        "targets": TARGETS,
        "meets_targets": {
            "hit_at_5_drop": hit5_drop <= TARGETS["hit_at_5_drop_at_most"],
            "query_p50_ratio": p50_ratio <= TARGETS["query_p50_ratio_at_most"],
        },
        "settings": {
            "embedder": base.index.embedder,
            "chunk_size": base.corpus.chunk_size,
            "fusion": base.qa.fusion,
            "bm25_weight": base.qa.bm25_weight,
            "dense_weight": base.qa.dense_weight,
            "vector_store": base.index.vector_store,
        },
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m_before": round(load_before, 2),
            "load_average_1m_after": round(os.getloadavg()[0], 2),
        },
    }
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        path = Path(out) / REPORT_NAME
        path.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench_scale_corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N distractor paragraphs")
    parser.add_argument("--split", choices=("dev", "test", "all"), default="test", help="seed eval split")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "eval" / "reports", help="report directory")
    parser.add_argument("--items", type=int, default=None, help="only the first N eval items (quick runs)")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the temporary indexes go")
    report = run(parser.parse_args(argv))
    seed, large = report["eval_hybrid"]["seed"], report["eval_hybrid"]["distractors"]
    print(f"{'index':<12} {'docs':>6} {'chunks':>7} {'build s':>8} {'MiB':>7} {'peak MiB':>9} "
          f"{'hit@1':>6} {'hit@5':>6} {'MRR':>6} {'answer':>7} {'q p50':>7} {'q p95':>7}")
    for name, figures in (("seed", seed), ("distractors", large)):
        build, query = report["builds"][name], report["query_hybrid_uncached"][name]
        print(f"{name:<12} {build['documents']:>6} {build['chunks']:>7} {build['build_s']:>8} "
              f"{build['index_mib']:>7} {build['peak_rss_mib']:>9} {figures['hit_at_1']:>6.3f} "
              f"{figures['hit_at_5']:>6.3f} {figures['mrr']:>6.3f} {figures['answer_accuracy']:>7.3f} "
              f"{query['p50_ms']:>7} {query['p95_ms']:>7}")
    print("hit@5 drop", report["hit_at_5_drop"], "query p50 ratio", report["query_p50_ratio"],
          "meets targets:", json.dumps(report["meets_targets"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
