"""Latency and throughput of POST /api/ask over HTTP on the loopback interface.

    python -m eval.bench_http                              # starts its own server
    python -m eval.bench_http --url http://127.0.0.1:8000  # a running `policyqa serve`

Sends the eval questions (eval/data/seed_qa.jsonl, with their history; a built-in list when
the file is missing) with 1 and then 8 concurrent clients, each phase bounded in requests
and seconds, and reports p50/p95 latency and requests per second. Every answer of a
concurrent phase is compared with the 1-client (serial) answer to the same question: the
micro-batched, cached run must answer exactly as the serial one. Prints a table and writes
eval/reports/bench_http.json with the settings and git commit. Targets: p50 <= 50 ms and
p95 <= 120 ms with one client; >= 40 requests/s with 8 clients, and at least twice the
1-client rate (issue 13).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx

from corpus.settings import PROJECT_ROOT, Settings, settings as default_settings
from eval.metrics import percentile

DEFAULT_OUTPUT = PROJECT_ROOT / "eval" / "reports" / "bench_http.json"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
TARGETS = {
    "p50_ms_1_client": 50.0,
    "p95_ms_1_client": 120.0,
    "rps_8_clients": 40.0,
    "rps_8_over_1_clients": 2.0,
}
# What differs between two identical answers: the time they took and the id to rate them by.
VOLATILE_FIELDS = ("latency_ms", "answer_id")

BUILT_IN_QUESTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("虹桥国际开放枢纽包括哪些区域？", ()),
    ("它的发展目标是什么？", ("虹桥国际开放枢纽包括哪些区域？",)),
    ("虹桥国际开放枢纽的空间布局是怎样的？", ()),
    ("到2025年虹桥国际开放枢纽要达到什么目标？", ()),
    ("虹桥国际中央商务区的重点产业有哪些？", ()),
    ("虹桥国际中央商务区的产业发展目标是什么？", ()),
    ("“十四五”时期上海国际贸易中心建设的主要目标是什么？", ()),
    ("上海如何提升国际贸易中心能级？", ()),
    ("如何发挥进博会的溢出带动效应？", ()),
    ("临港新片区在开放枢纽中发挥什么作用？", ()),
    ("虹桥国际贸易中心新平台有哪些对策建议？", ()),
    ("如何发展离岸贸易？", ()),
    ("数字贸易发展有哪些举措？", ()),
    ("总部经济如何集聚？", ()),
    ("长三角一体化发展的相关要求是什么？", ()),
    ("虹桥商务区的交通枢纽功能如何提升？", ()),
    ("如何建设国际化中央商务区？", ()),
    ("跨境电商有哪些支持政策？", ()),
    ("火星殖民地的个人所得税起征点是多少？", ()),
    ("会展经济如何发展？", ()),
)


@dataclass(frozen=True)
class PhaseResult:
    clients: int
    requests: int
    errors: int
    wall_s: float
    requests_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    server_p50_ms: float | None  # the assistant's own latency_ms: the rest is HTTP overhead
    # answers compared with the serial phase's answer to the same question, and how many differed
    compared: int = 0
    differing: int = 0


def load_questions(path: Path | None = None) -> list[tuple[str, tuple[str, ...]]]:
    """(question, history) pairs of the eval set, or the built-in list without one."""
    from eval.dataset import DEFAULT_PATH, load_items

    path = path or DEFAULT_PATH
    if not Path(path).exists():
        return list(BUILT_IN_QUESTIONS)
    return [(item.question, tuple(item.history)) for item in load_items(path)]


def check_loopback(url: str) -> str:
    """:raises SystemExit: for a URL that is not on this machine's loopback interface."""
    host = urlparse(url).hostname
    if host not in LOOPBACK_HOSTS:
        raise SystemExit(f"refusing to load-test {url!r}: only loopback URLs (127.0.0.1) are benchmarked")
    return url.rstrip("/")


def run_phase(
    url: str,
    questions: Sequence[tuple[str, tuple[str, ...]]],
    clients: int,
    max_requests: int,
    max_seconds: float,
    answers: dict[int, str] | None = None,
) -> PhaseResult:
    """`clients` threads, each with its own keep-alive connection, send questions in turn
    until `max_requests` are sent or `max_seconds` have passed.

    With `answers` (question number -> canonical answer JSON): answers to questions not in
    it are added; the others are compared with it (`compared`, `differing`)."""
    order = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    server_latencies: list[float] = []
    errors = [0]
    comparison = [0, 0]  # compared, differing
    deadline = time.perf_counter() + max_seconds

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while time.perf_counter() < deadline:
                with lock:
                    number = next(order)
                if number >= max_requests:
                    return
                question_number = number % len(questions)
                question, history = questions[question_number]
                started = time.perf_counter()
                try:
                    response = http.post("/api/ask", json={"question": question, "history": list(history)})
                    ok = response.status_code == 200
                    body = response.json() if ok else {}
                except httpx.HTTPError:
                    ok, body = False, {}
                elapsed = (time.perf_counter() - started) * 1000
                server_ms = body.get("latency_ms")
                with lock:
                    if ok:
                        latencies.append(elapsed)
                        if server_ms is not None:
                            server_latencies.append(float(server_ms))
                        if answers is not None:
                            canonical = canonical_answer(body)
                            if question_number in answers:
                                comparison[0] += 1
                                comparison[1] += answers[question_number] != canonical
                            else:
                                answers[question_number] = canonical
                    else:
                        errors[0] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    done = len(latencies)

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    return PhaseResult(
        clients=clients,
        requests=done,
        errors=errors[0],
        wall_s=round(wall, 2),
        requests_per_s=round(done / wall, 1) if wall > 0 else 0.0,
        p50_ms=rounded(percentile(latencies, 50)),
        p95_ms=rounded(percentile(latencies, 95)),
        mean_ms=rounded(sum(latencies) / done if done else None),
        max_ms=rounded(max(latencies) if latencies else None),
        server_p50_ms=rounded(percentile(server_latencies, 50)),
        compared=comparison[0],
        differing=comparison[1],
    )


def canonical_answer(body: dict) -> str:
    """The answer JSON without what legitimately differs between two identical answers."""
    return json.dumps({k: v for k, v in body.items() if k not in VOLATILE_FIELDS}, sort_keys=True)


@contextlib.contextmanager
def own_server(settings: Settings) -> Iterator[str]:
    """A real `create_app` server on a free loopback port over settings.index.index_dir."""
    from qa import Assistant
    from ui.app import create_app
    from ui.server import BackgroundServer, free_port

    port = free_port()
    server_settings = settings.model_copy(update={"host": "127.0.0.1", "port": port})
    app = create_app(server_settings, assistant=Assistant.load(server_settings))
    with BackgroundServer(app, port, start_timeout_s=120) as server:
        yield server.url


def verdicts(phases: Sequence[PhaseResult]) -> dict[str, bool | None]:
    by_clients = {phase.clients: phase for phase in phases}
    single, eight = by_clients.get(1), by_clients.get(8)

    def at_most(value: float | None, target: float) -> bool | None:
        return None if value is None else value <= target

    return {
        "p50_ms_1_client": at_most(single.p50_ms, TARGETS["p50_ms_1_client"]) if single else None,
        "p95_ms_1_client": at_most(single.p95_ms, TARGETS["p95_ms_1_client"]) if single else None,
        "rps_8_clients": (eight.requests_per_s >= TARGETS["rps_8_clients"]) if eight else None,
        "rps_8_over_1_clients": (
            eight.requests_per_s >= TARGETS["rps_8_over_1_clients"] * single.requests_per_s
            if single and eight else None
        ),
        "answers_identical_to_serial": (
            all(phase.differing == 0 for phase in phases if phase.compared)
            if any(phase.compared for phase in phases) else None
        ),
    }


def format_table(phases: Sequence[PhaseResult]) -> str:
    header = (
        f"{'clients':>7} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} "
        f"{'req/s':>7} {'server p50':>10} {'same/compared':>13}"
    )
    rows = [header, "-" * len(header)]
    for phase in phases:
        rows.append(
            f"{phase.clients:>7} {phase.requests:>8} {phase.errors:>6} {phase.p50_ms!s:>8} "
            f"{phase.p95_ms!s:>8} {phase.mean_ms!s:>8} {phase.requests_per_s:>7} {phase.server_p50_ms!s:>10} "
            f"{f'{phase.compared - phase.differing}/{phase.compared}':>13}"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench_http", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server on 127.0.0.1; without it one is started")
    parser.add_argument("--index-dir", type=Path, help="index for the server started here")
    parser.add_argument("--clients", default="1,8", help="comma-separated client counts (default 1,8)")
    parser.add_argument("--requests", type=int, default=200, help="at most this many requests per phase")
    parser.add_argument("--seconds", type=float, default=30.0, help="at most this long per phase")
    parser.add_argument("--warmup", type=int, default=10, help="untimed requests first")
    parser.add_argument("--questions", type=Path, help="eval JSONL (default eval/data/seed_qa.jsonl)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)

    client_counts = [int(value) for value in args.clients.split(",") if value.strip()]
    questions = load_questions(args.questions)
    settings = default_settings
    if args.index_dir is not None:
        settings = settings.model_copy(update={"index_dir": args.index_dir})

    load_before = os.getloadavg()[0]  # other work on the machine skews the figures
    with contextlib.ExitStack() as stack:
        url = check_loopback(args.url) if args.url else stack.enter_context(own_server(settings))
        warmup = run_phase(url, questions, 1, args.warmup, args.seconds)
        if warmup.requests == 0:
            raise SystemExit(f"no successful answer from {url}/api/ask during warm-up")
        # the first phase (1 client: serial) records each question's answer, later ones compare
        answers: dict[int, str] = {}
        phases = [
            run_phase(url, questions, clients, args.requests, args.seconds, answers)
            for clients in client_counts
        ]

    report = {
        "benchmark": "http_ask",
        "url": url if args.url else "self-started on 127.0.0.1",
        "questions": len(questions),
        "max_requests_per_phase": args.requests,
        "max_seconds_per_phase": args.seconds,
        "phases": [asdict(phase) for phase in phases],
        "targets": TARGETS,
        "meets_targets": verdicts(phases),
        "settings": {
            "index_dir": str(settings.index.index_dir),
            "embedder": settings.index.embedder,
            "retrieval_mode": settings.qa.retrieval_mode,
            "top_k": settings.qa.top_k,
            "query_cache_size": settings.index.query_cache_size,
            "query_batch_wait_ms": settings.index.query_batch_wait_ms,
        },
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_1m_before": round(load_before, 2),
            "load_average_1m_after": round(os.getloadavg()[0], 2),
        },
        "commit": _commit(),
        "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    print(format_table(phases))
    print("meets targets:", json.dumps(report["meets_targets"]))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


def _commit() -> str:
    from eval.runner import git_commit

    return git_commit()


if __name__ == "__main__":
    sys.exit(main())
