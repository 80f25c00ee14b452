"""Latency of the QA path over every eval question: retrieval alone and the whole answer.

Run with `python -m eval.bench_qa` or `policyqa bench`; prints a table and writes
eval/reports/bench_qa.json (timings with the settings and git commit that produced them).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from corpus.settings import Settings
from eval.metrics import percentile
from eval.report import format_value, text_table
from eval.runner import config_settings, git_commit


@dataclass(frozen=True)
class LatencyRow:
    config: str
    calls: int
    retrieval_p50_ms: float | None
    retrieval_p95_ms: float | None
    answer_p50_ms: float | None
    answer_p95_ms: float | None
    answer_mean_ms: float | None
    query_embedding_p50_ms: float | None = None
    query_embedding_p95_ms: float | None = None

    @property
    def answer_to_embedding_ratio(self) -> float | None:
        """Answer p50 over query-embedding p50, measured in the same run (the machine is
        noisy; a ratio travels better than milliseconds)."""
        if not self.answer_p50_ms or not self.query_embedding_p50_ms:
            return None
        return self.answer_p50_ms / self.query_embedding_p50_ms


def time_calls(
    calls: Sequence[Callable[[Any], Any]], inputs: Sequence[Any], repeats: int = 1
) -> list[list[float]]:
    """Wall-clock milliseconds of each `call(x)` for each input, `repeats` passes over them.

    The calls take turns on each input, so a change in machine load (other processes on a
    shared machine) touches every call alike instead of whichever happened to run then.
    """
    timings: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for value in inputs:
            for call, spent in zip(calls, timings):
                started = time.perf_counter()
                call(value)
                spent.append((time.perf_counter() - started) * 1000)
    return timings


def retrieval_call(assistant: Any, index: Any, settings: Settings) -> Callable[[str], Any]:
    """Retrieval only (no follow-up rewriting, no answer extraction): the assistant's own
    retrieve step or retriever when it exposes one, else the qa layer's Retriever over the
    same index and settings."""
    if callable(getattr(assistant, "retrieve", None)):
        return assistant.retrieve
    retriever = getattr(assistant, "retriever", None)
    if retriever is not None and callable(getattr(retriever, "run", None)):
        return retriever.run
    from qa.retrieve import Retriever

    return Retriever(index, settings).run


def bench_config(
    index: Any, settings: Settings, config: str, questions: Sequence[tuple[str, tuple[str, ...]]],
    warmup: int = 5, repeats: int = 1,
) -> LatencyRow:
    """Time one configuration after `warmup` untimed answers (model loads, caches)."""
    from qa import Assistant

    run_settings = config_settings(settings, config)
    assistant = Assistant.over(index, run_settings)
    for question, history in list(questions)[:warmup]:
        assistant.ask(question, history=history)
    retrieve = retrieval_call(assistant, index, run_settings)
    retrieval, answers, embeddings = time_calls(
        [
            lambda pair: retrieve(pair[0]),
            lambda pair: assistant.ask(pair[0], history=pair[1]),
            lambda pair: index.embed_query(pair[0]),
        ],
        questions,
        repeats,
    )
    return LatencyRow(
        config=config,
        calls=len(answers),
        retrieval_p50_ms=percentile(retrieval, 50),
        retrieval_p95_ms=percentile(retrieval, 95),
        answer_p50_ms=percentile(answers, 50),
        answer_p95_ms=percentile(answers, 95),
        answer_mean_ms=sum(answers) / len(answers) if answers else None,
        query_embedding_p50_ms=percentile(embeddings, 50),
        query_embedding_p95_ms=percentile(embeddings, 95),
    )


def format_latency_table(rows: Sequence[LatencyRow]) -> str:
    header = ["config", "calls", "retrieve p50", "retrieve p95", "answer p50", "answer p95",
              "answer mean", "query emb p50", "answer/emb p50"]
    lines = [
        [row.config, str(row.calls)]
        + [format_value(value, "ms") for value in (
            row.retrieval_p50_ms, row.retrieval_p95_ms, row.answer_p50_ms, row.answer_p95_ms,
            row.answer_mean_ms, row.query_embedding_p50_ms)]
        + [f"{row.answer_to_embedding_ratio:.1f}x" if row.answer_to_embedding_ratio else "-"]
        for row in rows
    ]
    return text_table(header, lines) + "\n(milliseconds, wall clock)"


def write_bench(rows: Sequence[LatencyRow], settings: Settings, path: Path, dataset: str,
                warmup: int, repeats: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "Assistant.ask latency over the eval questions",
        "dataset": dataset,
        "commit": git_commit(),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpus": os.cpu_count(),
            # the machine is shared: the 1-minute load average says how busy it was
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "warmup": warmup,
        "repeats": repeats,
        "rows": [asdict(row) | {"answer_to_embedding_ratio": row.answer_to_embedding_ratio} for row in rows],
        # peak resident memory of this process: index, embedder and reader loaded
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "settings": settings.flat_dump(mode="json"),
    }
    path.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


if __name__ == "__main__":
    from eval.cli import bench

    bench()
