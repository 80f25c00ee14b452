"""Knowledge-base benchmark: adding one document to a serving index versus a full rebuild.

Run with `python -m eval.bench_kb` (about 1.5 min of CPU for the cold rebuild; add
`--skip-cold` to leave it out). On a temporary copy of the seed corpus (never the real one):

1. a warm rebuild of the seed index (every passage in the project's embedding cache);
2. adding one typical document the way the service does it: `Library.add` (validate in a
   temporary folder, store the original, write the catalogue), then `build_and_publish`
   (load the corpus, build a staged index version embedding only passages missing from the
   cache, load it into a new Assistant, publish it). The document is seed 001 (about 6,500
   characters) as a new edition: its title line carries a run-unique edition mark, so every
   one of its passages is new to the cache, as any new document's are;
3. a full rebuild of the same corpus with an empty embedding cache.

Prints a table and writes eval/reports/bench_kb.json with the settings, machine, load
average and git commit that produced the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from corpus.settings import PROJECT_ROOT, Settings

REPORT_PATH = PROJECT_ROOT / "eval" / "reports" / "bench_kb.json"
TYPICAL_DOCUMENT = PROJECT_ROOT / "corpus" / "documents" / "001_bfabfcb7a022c977.txt"


def git_commit() -> str | None:
    import subprocess

    completed = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    return completed.stdout.strip() or None if completed.returncode == 0 else None


def temp_settings(work: Path, cache_dir: Path) -> Settings:
    corpus_dir = work / "corpus"
    shutil.copytree(PROJECT_ROOT / "corpus" / "documents", corpus_dir)
    shutil.copyfile(PROJECT_ROOT / "corpus" / "catalogue.json", work / "catalogue.json")
    return Settings(
        corpus_dir=corpus_dir,
        catalogue_path=work / "catalogue.json",
        index_dir=work / "index",
        data_dir=work,
        cache_dir=cache_dir,
        feedback_db=work / "feedback.sqlite3",
    )


def new_edition(work: Path) -> Path:
    """Seed 001 with an edition mark on its title line: same size and shape, new passages."""
    lines = TYPICAL_DOCUMENT.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[0] = lines[0].rstrip("\n") + f"（{uuid.uuid4().hex[:8]} 修订版）\n"
    path = work / "新版总体方案.txt"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def timed(call):
    started, cpu_started = time.perf_counter(), time.process_time()
    value = call()
    return value, round(time.perf_counter() - started, 2), round(time.process_time() - cpu_started, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench_kb", description=__doc__.split("\n")[0])
    parser.add_argument("--skip-cold", action="store_true", help="leave out the empty-cache rebuild")
    parser.add_argument("--output", type=Path, default=REPORT_PATH)
    args = parser.parse_args(argv)

    from corpus.library import Library
    from index import build_index, make_embedder
    from ui.kb import build_and_publish

    result: dict = {
        "benchmark": "kb",
        "command": "python -m eval.bench_kb" + (" --skip-cold" if args.skip_cold else ""),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
        "load_average": {"before": [round(x, 2) for x in os.getloadavg()]},
    }
    with tempfile.TemporaryDirectory(prefix="bench-kb-") as folder:
        work = Path(folder)
        settings = temp_settings(work, PROJECT_ROOT / "var" / "cache")
        result["settings"] = {name: str(settings.flat_dump()[name]) for name in
                              ("embedder", "chunk_size", "chunk_overlap", "use_bigrams")}
        make_embedder(settings.index.embedder)  # loading the model is start-up cost, not rebuild cost

        print("warm rebuild of the seed index...", flush=True)
        report, wall, cpu = timed(lambda: build_index(settings, progress=False))
        result["seed_warm_rebuild"] = {"wall_s": wall, "cpu_s": cpu, "documents": report.documents,
                                       "chunks": report.chunks, "embedded": report.embedded}

        document = new_edition(work)
        print(f"adding one document ({len(document.read_text(encoding='utf-8'))} characters)...", flush=True)
        added, store_wall, _ = timed(lambda: Library(settings).add(document))
        (assistant, outcome), wall, cpu = timed(lambda: build_and_publish(settings))
        answer = assistant.ask("虹桥国际开放枢纽包括哪些区域？", documents=[added.document.doc_id])
        result["incremental_add"] = {
            "characters": len(added.document.text),
            "store_s": store_wall,
            "rebuild_wall_s": wall,
            "rebuild_cpu_s": cpu,
            "total_s": round(store_wall + wall, 2),
            "embedded": outcome.embedded,
            "cached": outcome.cached,
            "chunks": outcome.chunks,
            "new_document_answers": answer.answered,
        }

        if not args.skip_cold:
            print("full rebuild with an empty embedding cache...", flush=True)
            cold = settings.model_copy(update={"cache_dir": work / "empty-cache",
                                               "index_dir": work / "cold-index"})
            report, wall, cpu = timed(lambda: build_index(cold, progress=False))
            result["full_rebuild_empty_cache"] = {"wall_s": wall, "cpu_s": cpu,
                                                  "chunks": report.chunks, "embedded": report.embedded}
    result["load_average"]["after"] = [round(x, 2) for x in os.getloadavg()]

    rows = [("seed warm rebuild", result["seed_warm_rebuild"]["wall_s"], result["seed_warm_rebuild"]["embedded"]),
            ("add one document (store + rebuild)", result["incremental_add"]["total_s"],
             result["incremental_add"]["embedded"])]
    if "full_rebuild_empty_cache" in result:
        rows.append(("full rebuild, empty cache", result["full_rebuild_empty_cache"]["wall_s"],
                     result["full_rebuild_empty_cache"]["embedded"]))
    print(f"{'':<36}{'wall s':>8}{'embedded':>10}")
    for name, seconds, embedded in rows:
        print(f"{name:<36}{seconds:>8.2f}{embedded:>10}")
    print(f"load average {result['load_average']['before']} before, {result['load_average']['after']} after")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"written {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
