"""Reply time of the WeChat endpoint: `POST /wechat` in plain and safe (AES) mode over the
eval questions, against a real server on 127.0.0.1 (the whole app, middleware included).

WeChat gives a server 5 seconds per attempt, so the figures that matter are p95 and max,
and how many replies fell back to "稍后再试". Every question is sent as a new message
(fresh MsgId, fresh user) so that no reply comes from the dedup cache.

Run with `python -m eval.bench_wechat [--limit N] [--index-dir DIR]`; prints a table and
writes eval/reports/bench_wechat.json with the settings and git commit.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import platform
import secrets
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import httpx

from corpus.settings import PROJECT_ROOT, Settings
from eval.metrics import percentile
from eval.report import format_value, text_table
from eval.runner import git_commit
from ui.cli_common import index_dir_option, settings_with

REPORT_PATH = PROJECT_ROOT / "eval" / "reports" / "bench_wechat.json"
DATASET_PATH = PROJECT_ROOT / "eval" / "data" / "seed_qa.jsonl"
# Used only when the eval set is missing.
BUILT_IN_QUESTIONS = (
    "虹桥国际开放枢纽包括哪些区域？",
    "虹桥国际开放枢纽的建设目标是什么？",
    "虹桥国际中央商务区的重点产业有哪些？",
    "“十四五”时期上海国际贸易中心建设的主要目标是什么？",
    "进博会的溢出带动效应如何放大？",
    "虹桥国际中央商务区面积多大？",
    "如何建设虹桥国际贸易中心新平台？",
    "临港新片区有哪些功能定位？",
    "火星移民签证需要准备哪些材料？",
    "数字贸易方面有哪些举措？",
)


@dataclass(frozen=True)
class ModeTiming:
    mode: str
    requests: int
    p50_ms: float | None
    p95_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    slow_replies: int  # replies that fell back to "稍后再试"
    errors: int  # non-200 answers or replies that did not parse / decrypt
    max_reply_bytes: int


def bench_questions(dataset_path: Path, limit: int | None) -> tuple[str, list[str]]:
    if dataset_path.exists():
        from eval.dataset import load_items

        questions = [item.question for item in load_items(dataset_path)]
        source = str(dataset_path)
    else:
        questions, source = list(BUILT_IN_QUESTIONS), "built-in list (eval set missing)"
    return source, questions[:limit] if limit else questions


class LoopbackServer:
    """The real app on 127.0.0.1 in a background thread, for the duration of a `with`."""

    def __init__(self, settings: Settings, assistant):
        self.settings = settings
        self.assistant = assistant

    def __enter__(self) -> str:
        from ui.app import create_app
        from ui.server import BackgroundServer, free_port

        port = free_port()
        app_settings = self.settings.model_copy(update={"port": port, "host": "127.0.0.1"})
        app = create_app(app_settings, assistant=self.assistant)
        try:
            self.server = BackgroundServer(app, port, start_timeout_s=120).start()
        except RuntimeError as error:
            raise click.ClickException(str(error)) from None
        return self.server.url

    def __exit__(self, *exc_info) -> None:
        self.server.stop()


class WeChatSide:
    """Builds requests the way WeChat's servers do (signatures, safe-mode encryption) and
    reads the replies."""

    def __init__(self, token: str, aes_key: str, app_id: str):
        from wechatpy.crypto import WeChatCrypto

        self.token = token
        self.crypto = WeChatCrypto(token, aes_key, app_id)
        self.message_ids = iter(range(int(time.time() * 1000), 2**62))

    def _signature(self, *parts: str) -> str:
        return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()

    def request(self, question: str, encrypted: bool) -> tuple[dict, bytes]:
        message_id = next(self.message_ids)
        timestamp, nonce = str(int(time.time())), secrets.token_hex(8)
        xml = (
            f"<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA["
            f"bench-user-{message_id}]]></FromUserName><CreateTime>{timestamp}</CreateTime>"
            f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{question}]]></Content>"
            f"<MsgId>{message_id}</MsgId></xml>"
        )
        query = {"signature": self._signature(self.token, timestamp, nonce),
                 "timestamp": timestamp, "nonce": nonce}
        if not encrypted:
            return query, xml.encode("utf-8")
        envelope = self.crypto.encrypt_message(xml, nonce, timestamp)
        encrypted_text = ElementTree.fromstring(envelope).findtext("Encrypt")
        query.update(encrypt_type="aes",
                     msg_signature=self._signature(self.token, timestamp, nonce, encrypted_text))
        return query, envelope.encode("utf-8")

    def reply_text(self, body: str, encrypted: bool) -> str:
        if encrypted:
            outer = {child.tag: child.text or "" for child in ElementTree.fromstring(body)}
            body = self.crypto.decrypt_message(
                body, outer["MsgSignature"], outer["TimeStamp"], outer["Nonce"]
            )
        return ElementTree.fromstring(body).findtext("Content") or ""


class ModeSamples:
    """What one mode's requests measured, accumulated one request at a time."""

    def __init__(self, encrypted: bool):
        self.encrypted = encrypted
        self.timings_ms: list[float] = []
        self.slow = 0
        self.errors = 0
        self.max_reply_bytes = 0

    def send(self, client: httpx.Client, url: str, side: WeChatSide, question: str,
             slow_text: str) -> None:
        query, body = side.request(question, self.encrypted)
        started = time.perf_counter()
        response = client.post(url, params=query, content=body)
        self.timings_ms.append((time.perf_counter() - started) * 1000)
        try:
            response.raise_for_status()
            reply = side.reply_text(response.text, self.encrypted)
        except Exception:
            self.errors += 1
            return
        self.slow += reply == slow_text
        self.max_reply_bytes = max(self.max_reply_bytes, len(reply.encode("utf-8")))

    def timing(self) -> ModeTiming:
        timings = self.timings_ms
        return ModeTiming(
            mode="safe (aes)" if self.encrypted else "plain",
            requests=len(timings),
            p50_ms=percentile(timings, 50),
            p95_ms=percentile(timings, 95),
            mean_ms=sum(timings) / len(timings) if timings else None,
            max_ms=max(timings) if timings else None,
            slow_replies=self.slow,
            errors=self.errors,
            max_reply_bytes=self.max_reply_bytes,
        )


def time_modes(client: httpx.Client, urls: tuple[str, str], side: WeChatSide, questions: list[str],
               slow_text: str, assistant) -> list[ModeTiming]:
    """Each question in both modes and once straight to `assistant.ask` (in process, the
    cost the endpoint adds nothing to), back to back in rotating order, so that load from
    other processes on the machine falls on all three alike. `urls` are (plain, safe): a
    server with an AES key refuses plain-mode messages, so each mode has its own."""
    plain, safe = ModeSamples(encrypted=False), ModeSamples(encrypted=True)
    direct: list[float] = []

    def ask_directly(question: str) -> None:
        started = time.perf_counter()
        assistant.ask(question)
        direct.append((time.perf_counter() - started) * 1000)

    for number, question in enumerate(questions):
        steps = [lambda: plain.send(client, urls[0], side, question, slow_text),
                 lambda: safe.send(client, urls[1], side, question, slow_text),
                 lambda: ask_directly(question)]
        for step in steps[number % 3:] + steps[: number % 3]:
            step()
    baseline = ModeTiming(
        mode="assistant.ask (no HTTP)", requests=len(direct),
        p50_ms=percentile(direct, 50), p95_ms=percentile(direct, 95),
        mean_ms=sum(direct) / len(direct), max_ms=max(direct),
        slow_replies=0, errors=0, max_reply_bytes=0,
    )
    return [plain.timing(), safe.timing(), baseline]


def format_timing_table(rows: list[ModeTiming]) -> str:
    header = ["mode", "requests", "p50", "p95", "mean", "max", "稍后再试", "errors",
              "max reply bytes"]
    lines = [
        [row.mode, str(row.requests)]
        + [format_value(value, "ms") for value in (row.p50_ms, row.p95_ms, row.mean_ms, row.max_ms)]
        + [str(row.slow_replies), str(row.errors), str(row.max_reply_bytes)]
        for row in rows
    ]
    return text_table(header, lines) + "\n(milliseconds, wall clock, loopback HTTP)"


@click.command("bench-wechat")
@index_dir_option
@click.option("--set", "dataset_path", type=click.Path(path_type=Path), default=DATASET_PATH,
              show_default=True, help="eval set whose questions are sent")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="send only the first N questions per mode")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=REPORT_PATH, show_default=True)
def bench_wechat(index_dir, dataset_path, limit, warmup, out) -> None:
    """Time POST /wechat replies (plain and safe mode) over the eval questions.

    Examples:

        python -m eval.bench_wechat

        python -m eval.bench_wechat --limit 20
    """
    from qa import Assistant
    from ui.bots import SLOW_TEXT

    source, questions = bench_questions(Path(dataset_path), limit)
    if not questions:
        raise click.ClickException(f"no questions in {source}")
    # Throwaway credentials: the server and the "WeChat side" exist only for this run.
    token = secrets.token_hex(16)
    aes_key = base64.b64encode(os.urandom(32)).decode().rstrip("=")
    app_id = "wx" + secrets.token_hex(8)
    run_settings = settings_with(index_dir=index_dir).model_copy(update={
        "wechat_token": token, "wechat_aes_key": aes_key, "wechat_app_id": app_id,
        "log_questions": False,
    })
    side = WeChatSide(token, aes_key, app_id)
    try:
        assistant = Assistant.load(run_settings)
    except Exception as error:
        raise click.ClickException(
            f"index not loaded from {run_settings.index.index_dir}: {error}"
        ) from None
    plain_settings = run_settings.model_copy(update={"wechat_aes_key": None})
    with LoopbackServer(plain_settings, assistant) as plain_base, \
            LoopbackServer(run_settings, assistant) as safe_base, httpx.Client(timeout=10) as client:
        urls = (f"{plain_base}/wechat", f"{safe_base}/wechat")
        for question in questions[:warmup]:
            query, body = side.request(question, encrypted=False)
            client.post(urls[0], params=query, content=body)
        click.echo(f"timing POST /wechat: {len(questions)} questions x 2 modes + direct ask",
                   err=True)
        rows = time_modes(client, urls, side, questions, SLOW_TEXT, assistant)
    click.echo(format_timing_table(rows))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    secret_fields = {"wechat_token", "wechat_aes_key", "wechat_app_id", "wecom_token",
                     "wecom_aes_key", "openai_api_key", "admin_api_key"}
    payload = {
        "benchmark": "POST /wechat reply time (loopback HTTP, whole app)",
        "dataset": source,
        "questions": len(questions),
        "warmup": warmup,
        "commit": git_commit(),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "cpus": os.cpu_count()},
        "rows": [asdict(row) for row in rows],
        "settings": run_settings.flat_dump(mode="json", exclude=secret_fields),
    }
    out.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
    click.echo(f"wrote {out}", err=True)


if __name__ == "__main__":
    bench_wechat()
