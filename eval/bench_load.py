"""Answering while staff change documents: zero downtime, complete index versions, latency.

    python -m eval.bench_load                    # 8 clients, 10 documents (30 changes)
    python -m eval.bench_load --clients 2 --documents 1 --seconds 5   # a quick look

Starts a real `policyqa serve` (its own process, as in production) on 127.0.0.1 over a
temporary copy of the seed corpus (the project's embedding cache is shared, so only the
passages of the documents written here are embedded), with an admin key and the per-client
rate limits off (all clients share one address). Then `--clients` threads ask questions
(the eval set's, plus questions only the churned documents answer), each waiting a random
think time (exponential, mean `--think-s`) between questions, through three phases:

1. `--seconds` before any change;
2. the churn: `--documents` new documents (about 660 characters, 11 passages each) are
   uploaded, then each is replaced by a new edition (the old one removed), then each edition
   is removed: 3 x documents changes, one after another, each waiting until its rebuild is
   live (/readyz `rebuild.applied`), then `--quiet-s` more;
3. `--seconds` after the last change.

A question counts as asked *during the churn* when it was sent while a change was being
stored or rebuilt, and *outside* otherwise (phases 1 and 3 and the quiet spells between
changes): the two samples interleave, so noise from other processes on the machine reaches
both alike.

Every answer carries the index version that produced it (header X-Index-Version). After
each change goes live the benchmark records that version and its documents (/api/documents),
so it can check that every answer came from a complete, published version: its version is
one of those recorded, and every document it cites is in that version.

Reports requests, errors (any answer but 200, or no answer), version violations and
latency (p50, p95, max) during the churn and outside it, the ratio of the two p95s, and each
rebuild's time and passages embedded. Targets: 0 errors, 0 violations, p95 during the churn
at most 3x p95 outside it. Writes eval/reports/bench_load.json with the settings, load
average and git commit: other processes on the machine add noise to every figure. Exit
status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from corpus.settings import PROJECT_ROOT
from eval.metrics import percentile

DEFAULT_OUTPUT = PROJECT_ROOT / "eval" / "reports" / "bench_load.json"
ADMIN_KEY = "bench-load-" + uuid.uuid4().hex
VERSION_HEADER = "x-index-version"
TARGET_P95_RATIO = 3.0
START_TIMEOUT_S = 300
APPLY_TIMEOUT_S = 600
KEEPALIVE_S = 2.0
# A different programme per document, so each question has one document that answers it.
PROGRAMMES = ("人工智能", "生物医药", "集成电路", "绿色低碳", "数字贸易", "会展服务", "跨境电商",
              "航空物流", "文化创意", "总部经济", "检验检测", "供应链金融")


@dataclass
class Request:
    client: int
    started: float  # perf_counter seconds
    ms: float
    status: int | None  # None: no answer (connection error, timeout)
    version: str | None = None
    cited: tuple[str, ...] = ()


@dataclass
class Change:
    action: str  # upload, replace, remove
    doc_id: str
    status: int
    seconds_to_live: float  # from the request until its rebuild was live
    rebuild_s: float | None  # the rebuild's own time, as /readyz reports it
    version: str | None
    error: str | None = None
    embedded: int | None = None  # passages the rebuild embedded (the rest came from the cache)
    cached: int | None = None


@dataclass
class PhaseStats:
    requests: int
    errors: int
    version_violations: int
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None
    seconds: float


@dataclass
class Report:
    outside: PhaseStats
    churn: PhaseStats
    p95_ratio: float | None
    changes: list[Change] = field(default_factory=list)
    versions: int = 0
    error_examples: list[str] = field(default_factory=list)


def document_text(programme: str, edition: int, mark: str) -> str:
    """A measure of about 660 characters (three passages: each rebuild after an upload
    embeds them with the batched passage embedder) about one programme; editions differ
    in the cap."""
    cap = 100 + 50 * edition
    # The mark is in the title, which every passage's indexed text carries: all of them are
    # new to the embedding cache on every run, as a new document's are.
    return f"""虹桥商务区{programme}专项扶持资金管理办法（第{edition}版，编号 {mark}）
第一条 为支持{programme}企业在虹桥商务区集聚发展，优化营商环境，根据有关规定，设立{programme}专项扶持资金，制定本办法。
第二条 本办法适用于在虹桥商务区注册、纳税和统计关系均在区内、从事{programme}业务且经营状况良好的企业。
第三条 专项扶持资金由管理委员会统筹安排，遵循公开透明、突出重点、注重绩效、严格监管的原则，接受财政和审计部门的监督。
第四条 {programme}专项扶持资金对单个企业每年最高支持{cap}万元，按企业上一年度在{programme}领域实际投入的百分之二十核定。
第五条 对新引进的{programme}领域总部企业，给予一次性落户奖励，奖励金额按其实缴注册资本的百分之一核定，最高不超过五百万元。
第六条 对{programme}企业租赁商务区内办公用房的，按实际租金的百分之三十给予补贴，补贴期限不超过三年，每年补贴面积不超过一千平方米。
第七条 企业于每年三月底前通过“虹桥企业服务”平台提交申请，并提供营业执照、财务审计报告、项目投入凭证等材料。
第八条 管理委员会在收到申请后二十个工作日内完成审核，必要时可委托第三方机构开展评审，审核结果在平台上公示七个工作日。
第九条 获得扶持的企业应当在五年内不迁离虹桥商务区，不改变在商务区的纳税义务；违反承诺的，管理委员会有权追回已拨付的资金。
第十条 企业以虚报、冒领等手段骗取专项扶持资金的，由管理委员会追回资金，并依法依规将失信信息纳入公共信用信息服务平台。
第十一条 本办法由虹桥商务区管理委员会负责解释，自发布之日起施行，有效期三年。
"""


def churn_question(programme: str) -> str:
    return f"{programme}专项扶持资金对单个企业每年最高支持多少？"


def start_server(work: Path, port: int, log_path: Path) -> subprocess.Popen:
    """`policyqa serve` over a copy of the seed corpus in `work`, in its own process."""
    corpus_dir = work / "corpus"
    shutil.copytree(PROJECT_ROOT / "corpus" / "documents", corpus_dir)
    shutil.copyfile(PROJECT_ROOT / "corpus" / "catalogue.json", work / "catalogue.json")
    env = {
        **os.environ,
        "POLICYQA_CORPUS_DIR": str(corpus_dir),
        "POLICYQA_CATALOGUE_PATH": str(work / "catalogue.json"),
        "POLICYQA_INDEX_DIR": str(work / "index"),
        "POLICYQA_DATA_DIR": str(work),
        "POLICYQA_FEEDBACK_DB": str(work / "feedback.sqlite3"),
        "POLICYQA_CACHE_DIR": str(PROJECT_ROOT / "var" / "cache"),
        "POLICYQA_ADMIN_API_KEY": ADMIN_KEY,
        "POLICYQA_LOG_QUESTIONS": "false",
        # Every client of the benchmark comes from 127.0.0.1: per-address limits off.
        "POLICYQA_RATE_LIMIT_PER_S": "0",
        "POLICYQA_RATE_LIMIT_BURST": "0",
    }
    command = [sys.executable, "-c", "from ui.cli import main; main()", "serve",
               "--host", "127.0.0.1", "--port", str(port)]
    log = open(log_path, "wb")
    return subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(http: httpx.Client, server: subprocess.Popen, timeout_s: float = START_TIMEOUT_S) -> dict:
    """/readyz once the index is loaded and no rebuild is running or queued."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode} before it was ready")
        try:
            response = http.get("/readyz")
            body = response.json()
            rebuild = body.get("rebuild", {})
            if response.status_code == 200 and not (rebuild.get("running") or rebuild.get("queued")):
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the server was not ready after {timeout_s:.0f} s")


class Clients:
    """`count` threads asking questions with exponential think times until stopped."""

    def __init__(self, url: str, questions: Sequence[tuple[str, tuple[str, ...]]], count: int,
                 think_s: float, seed: int) -> None:
        self.url = url
        self.questions = list(questions)
        self.think_s = think_s
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.began = time.perf_counter()
        self._threads = [threading.Thread(target=self._loop, args=(number, seed + number), daemon=True)
                         for number in range(count)]

    def start(self) -> None:
        self.began = time.perf_counter()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _loop(self, number: int, seed: int) -> None:
        chooser = random.Random(seed)
        # A connection idle for longer than uvicorn keeps it (5 s) may be closed by the server
        # just as a question goes out on it; clients close theirs sooner, as browsers do.
        limits = httpx.Limits(keepalive_expiry=KEEPALIVE_S)
        with httpx.Client(base_url=self.url, timeout=60, limits=limits) as http:
            while not self._stop.is_set():
                question, history = chooser.choice(self.questions)
                started = time.perf_counter()
                record = Request(number, started, 0.0, None)
                try:
                    response = http.post("/api/ask", json={"question": question, "history": list(history)})
                    record.status = response.status_code
                    if response.status_code == 200:
                        record.version = response.headers.get(VERSION_HEADER)
                        record.cited = tuple(c["doc_id"] for c in response.json().get("citations", []))
                    else:
                        self._error(started, f"{response.status_code} {response.text[:200]}")
                except (httpx.HTTPError, ValueError) as error:
                    self._error(started, f"{type(error).__name__}: {error}")
                record.ms = (time.perf_counter() - started) * 1000
                with self._lock:
                    self.requests.append(record)
                if self.think_s > 0:
                    self._stop.wait(chooser.expovariate(1 / self.think_s))

    def _error(self, started: float, text: str) -> None:
        with self._lock:
            if len(self.errors) < 20:
                self.errors.append(f"at {started - self.began:.1f} s: {text}")


class Churn:
    """Uploads, replaces and removes documents through the admin API, one change at a time,
    each waiting until it is live; records each live version's documents."""

    def __init__(self, http: httpx.Client, documents: int, mark: str, quiet_s: float = 0.0) -> None:
        self.http = http
        self.documents = documents
        self.mark = mark
        self.quiet_s = quiet_s
        self.windows: list[tuple[float, float]] = []  # (request sent, rebuild live), perf_counter
        self.auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
        self.versions: dict[str, set[str]] = {}
        self.changes: list[Change] = []

    def record_version(self) -> str | None:
        """The serving version and its documents (read twice: the version must not move)."""
        for _ in range(5):
            before = self.http.get("/readyz").json().get("index_version")
            documents = {d["doc_id"] for d in self.http.get("/api/documents").json()}
            if before and self.http.get("/readyz").json().get("index_version") == before:
                self.versions[before] = documents
                return before
        return None

    def _upload(self, programme: str, edition: int, replaces: str | None = None) -> httpx.Response:
        text = document_text(programme, edition, f"{self.mark}-{edition}")
        fields = {"replaces": replaces, "remove_replaced": "true"} if replaces else {}
        return self.http.post(
            "/api/documents", headers=self.auth, data=fields,
            files={"file": (f"{programme}扶持办法-{edition}.txt", io.BytesIO(text.encode("utf-8")))},
        )

    def _apply(self, action: str, response: httpx.Response, doc_id: str | None, started: float) -> str | None:
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        doc_id = doc_id or (body.get("document") or {}).get("doc_id") or "?"
        ok = response.status_code in (200, 201)
        change = Change(action, doc_id, response.status_code, 0.0, None, None,
                        None if ok else response.text[:200])
        if ok:
            ticket = body["ticket"]
            deadline = time.monotonic() + APPLY_TIMEOUT_S
            while time.monotonic() < deadline:
                rebuild = self.http.get("/readyz").json()["rebuild"]
                if rebuild["applied"] >= ticket:
                    break
                if not (rebuild["running"] or rebuild["queued"]):
                    change.error = (rebuild.get("last") or {}).get("error") or "rebuild stopped"
                    break
                time.sleep(0.2)
            else:
                change.error = f"not live after {APPLY_TIMEOUT_S} s"
            self.windows.append((started, time.perf_counter()))
            change.seconds_to_live = round(time.perf_counter() - started, 2)
            last = self.http.get("/readyz").json()["rebuild"].get("last") or {}
            change.rebuild_s = last.get("seconds")
            change.embedded, change.cached = last.get("embedded"), last.get("cached")
            change.version = self.record_version()
        self.changes.append(change)
        print(f"  {action:7} {doc_id:6} -> {response.status_code}, live after {change.seconds_to_live} s"
              f" (rebuild {change.rebuild_s} s, {change.embedded} passages embedded)"
              + (f" ERROR {change.error}" if change.error else ""), flush=True)
        time.sleep(self.quiet_s)  # a quiet spell: answers then count as outside the churn
        return doc_id if ok else None

    def run(self) -> None:
        programmes = PROGRAMMES[: self.documents]
        current: dict[str, str] = {}
        for programme in programmes:
            started = time.perf_counter()
            if doc_id := self._apply("upload", self._upload(programme, 1), None, started):
                current[programme] = doc_id
        for programme in programmes:
            if programme not in current:
                continue
            started = time.perf_counter()
            response = self._upload(programme, 2, replaces=current[programme])
            if doc_id := self._apply("replace", response, None, started):
                current[programme] = doc_id
        for programme in programmes:
            if programme not in current:
                continue
            started = time.perf_counter()
            doc_id = current[programme]
            self._apply("remove", self.http.delete(f"/api/documents/{doc_id}", headers=self.auth),
                        doc_id, started)


def phase_stats(requests: Sequence[Request], versions: dict[str, set[str]], seconds: float) -> PhaseStats:
    answered = [r for r in requests if r.status == 200]
    violations = sum(
        1 for r in answered
        if r.version not in versions or not set(r.cited) <= versions[r.version]
    )
    latencies = [r.ms for r in requests if r.status is not None]

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    return PhaseStats(
        requests=len(requests),
        errors=len(requests) - len(answered),
        version_violations=violations,
        p50_ms=rounded(percentile(latencies, 50)),
        p95_ms=rounded(percentile(latencies, 95)),
        max_ms=rounded(max(latencies) if latencies else None),
        seconds=round(seconds, 1),
    )


def run(clients: int, documents: int, seconds: float, think_s: float, seed: int, work: Path,
        quiet_s: float = 0.0) -> Report:
    from ui.server import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(work, port, work / "server.log")
    try:
        with httpx.Client(base_url=url, timeout=120) as http:
            wait_ready(http, server)
            churn = Churn(http, documents, uuid.uuid4().hex[:8], quiet_s)
            churn.record_version()
            questions = _questions(documents)
            warm = Clients(url, questions[:20], 1, 0.0, seed)  # load every lazy part first
            warm.start()
            time.sleep(min(10.0, seconds))
            warm.stop()

            crowd = Clients(url, questions, clients, think_s, seed)
            crowd.start()
            began = time.perf_counter()
            time.sleep(seconds)
            churn_began = time.perf_counter()
            print(f"churn: {documents} documents uploaded, replaced, removed", flush=True)
            churn.run()
            churn_ended = time.perf_counter()
            time.sleep(seconds)
            crowd.stop()
            ended = time.perf_counter()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()

    # A question belongs to the churn when it was asked while a change was being stored or
    # rebuilt; the rest (before, between changes, after) is outside. Interleaving the two
    # exposes both to the same noise from other processes on the machine.
    def in_churn(request: Request) -> bool:
        return any(start <= request.started < live for start, live in churn.windows)

    during = [r for r in crowd.requests if in_churn(r)]
    outside = [r for r in crowd.requests if not in_churn(r)]
    churn_seconds = sum(live - start for start, live in churn.windows)
    outside_stats = phase_stats(outside, churn.versions, (ended - began) - churn_seconds)
    churn_stats = phase_stats(during, churn.versions, churn_seconds)
    ratio = (round(churn_stats.p95_ms / outside_stats.p95_ms, 2)
             if churn_stats.p95_ms and outside_stats.p95_ms else None)
    print(f"churn from {churn_began - crowd.began:.1f} s to {churn_ended - crowd.began:.1f} s "
          f"of {ended - crowd.began:.1f} s", flush=True)
    return Report(outside_stats, churn_stats, ratio, churn.changes, len(churn.versions), crowd.errors)


def _questions(documents: int) -> list[tuple[str, tuple[str, ...]]]:
    """The eval questions, plus one question per churned document (a quarter of the mix)."""
    from eval.bench_http import load_questions

    seed_questions = load_questions()
    churned = [(churn_question(programme), ()) for programme in PROGRAMMES[:documents]]
    repeats = max(1, len(seed_questions) // (3 * max(1, len(churned))))
    return seed_questions + churned * repeats


def format_table(report: Report) -> str:
    header = f"{'phase':<8} {'requests':>8} {'errors':>6} {'violations':>10} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'s':>6}"
    rows = [header, "-" * len(header)]
    for name, stats in (("outside", report.outside), ("churn", report.churn)):
        rows.append(f"{name:<8} {stats.requests:>8} {stats.errors:>6} {stats.version_violations:>10} "
                    f"{stats.p50_ms!s:>8} {stats.p95_ms!s:>8} {stats.max_ms!s:>8} {stats.seconds:>6}")
    live = [change.seconds_to_live for change in report.changes]
    rows.append(f"p95 churn / outside: {report.p95_ratio} (target <= {TARGET_P95_RATIO})")
    embedded = [change.embedded for change in report.changes if change.embedded is not None]
    rows.append(f"passages embedded per rebuild: max {max(embedded, default=0)}, total {sum(embedded)}")
    rows.append(f"changes: {len(report.changes)} ({sum(1 for c in report.changes if c.error)} failed), "
                f"versions served: {report.versions}, seconds to live: "
                f"median {percentile(live, 50) or 0:.1f}, max {max(live, default=0):.1f}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--documents", type=int, default=10, help=f"documents churned (at most {len(PROGRAMMES)})")
    parser.add_argument("--seconds", type=float, default=45.0, help="asking before and after the churn")
    parser.add_argument("--think-s", type=float, default=1.0, help="mean pause of a client between questions")
    parser.add_argument("--quiet-s", type=float, default=5.0,
                        help="pause after each change is live (answers then count as outside the churn)")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if not 1 <= args.documents <= len(PROGRAMMES):
        parser.error(f"--documents must be 1..{len(PROGRAMMES)}")

    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="bench-load-") as folder:
        report = run(args.clients, args.documents, args.seconds, args.think_s, args.seed, Path(folder),
                     args.quiet_s)
    meets = {
        "zero_errors": report.outside.errors + report.churn.errors == 0
        and not any(change.error for change in report.changes),
        "complete_versions": report.outside.version_violations + report.churn.version_violations == 0,
        "p95_ratio": report.p95_ratio is not None and report.p95_ratio <= TARGET_P95_RATIO,
    }
    result = {
        "benchmark": "load_during_churn",
        "command": "python -m eval.bench_load " + " ".join(argv if argv is not None else sys.argv[1:]),
        "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "settings": {"clients": args.clients, "documents": args.documents, "seconds": args.seconds,
                     "think_s": args.think_s, "quiet_s": args.quiet_s, "seed": args.seed,
                     "rebuild_isolated": os.environ.get("POLICYQA_REBUILD_ISOLATED", "true (default)"),
                     "rebuild_nice": os.environ.get("POLICYQA_REBUILD_NICE", "10 (default)")},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform(), "load_average_before": load_before,
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        **asdict(report),
        "target_p95_ratio": TARGET_P95_RATIO,
        "meets_targets": meets,
    }
    print(format_table(report))
    print("meets targets:", json.dumps(meets))
    if report.error_examples:
        print("errors, for example:", *report.error_examples[:5], sep="\n  ")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0 if all(meets.values()) else 1


def _commit() -> str:
    from eval.runner import git_commit

    return git_commit()


if __name__ == "__main__":
    sys.exit(main())
