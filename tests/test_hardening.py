"""The doors an attack from outside found open (issue 16), each shut and kept shut: Gradio's
upload route, unbounded and slowly sent bodies, plain-mode WeChat with an AES key, uploads
read before the admin key is checked, an index left behind its corpus by a crash,
decompression bombs, 500s on hostile input, and the lower ones (chat text in tracebacks,
echoed ids, client-made feedback, leftover upload folders, short admin keys, renames not
synced).

A real server on 127.0.0.1 over a temporary copy of the seed corpus, with a stand-in
assistant (no index, no reader model: only the HTTP layer is under test here) and a
rebuild manager whose builds finish at once.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import time
import xml.etree.ElementTree as ElementTree
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from wechatpy.crypto import WeChatCrypto

from helpers import copy_seed_corpus
from corpus.settings import PROJECT_ROOT, Settings
from qa.errors import QuestionError
from qa.models import Answer, Citation

ADMIN_KEY = "hardening-admin-key-7d2e9a"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
WECHAT_TOKEN = "hardening-token"
WECHAT_APP_ID = "wx0123456789abcdef"
WECHAT_AES_KEY = base64.b64encode(os.urandom(32)).decode().rstrip("=")
BODY_TIMEOUT_S = 2.0
MARKER = "ZQXHARDENINGMARKER"
CHINESE = re.compile(r"[\u4e00-\u9fff]")
QUESTION = "虹桥国际开放枢纽包括哪些区域？"


class StandInAssistant:
    """Answers every question with one quoted sentence, echoing the question as its query
    as the real assistant does, and refuses unknown document ids with the real
    assistant's QuestionError (whose message names them)."""

    def __init__(self, documents: list):
        self.documents = list(documents)
        self.index = SimpleNamespace(
            version="stand-in", chunks=[], manifest={"embedder": "none", "counts": {"chunks": 0}}
        )
        self.questions: list[str] = []

    def ask(self, question, history=(), *, documents=None, **options) -> Answer:
        self.questions.append(question)
        unknown = sorted(set(documents or ()) - {d.doc_id for d in self.documents})
        if unknown:
            raise QuestionError(f"未知的文档编号：{'、'.join(unknown)}。", "unknown_document", "documents")
        quote = "虹桥国际开放枢纽包括虹桥商务区、长三角生态绿色一体化发展示范区等区域。"
        citation = Citation(
            title="虹桥国际开放枢纽建设总体方案", section="一、总体要求", quote=quote,
            source_file="001_bfabfcb7a022c977.txt", doc_id="001", chunk_id="aaaa000011112222",
            score=0.9,
        )
        return Answer(
            answer=quote, answered=True, query=question, question=question,
            citations=(citation,), passages=(citation,), confidence=0.9,
        )


def instant_rebuilds(settings: Settings, assistant):
    """A rebuild manager whose builds succeed at once with `assistant`."""
    from ui.kb import BuildOutcome, RebuildManager

    def build(_settings):
        return assistant, BuildOutcome(finished_at="now", seconds=0.0, version="rebuilt")

    def go_live(new_assistant):
        pass

    return RebuildManager(settings, on_ready=go_live, build=build)


@dataclass
class Service:
    url: str
    settings: Settings
    app: object
    assistant: StandInAssistant
    client: httpx.Client

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    from corpus import load_corpus
    from ui.app import create_app
    from ui.server import BackgroundServer, free_port

    port = free_port()
    settings = copy_seed_corpus(
        tmp_path_factory.mktemp("hardening"),
        port=port,
        admin_api_key=ADMIN_KEY,
        wechat_token=WECHAT_TOKEN,
        wechat_app_id=WECHAT_APP_ID,
        wechat_aes_key=WECHAT_AES_KEY,
        log_questions=False,
        request_body_timeout_s=BODY_TIMEOUT_S,
    )
    assistant = StandInAssistant(load_corpus(settings).documents)
    app = create_app(settings, assistant=assistant)
    app.state.rebuild = instant_rebuilds(settings, assistant)
    with BackgroundServer(app, port) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield Service(server.url, settings, app, assistant, client)


def assert_error_envelope(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text[:300]
    body = response.json()
    assert set(body) == {"error", "message", "details"} and CHINESE.search(body["message"]), body
    assert MARKER not in response.text
    return body


def raw_exchange(port: int, head: bytes, body_start: bytes, wait_s: float) -> bytes:
    """Sends a request head and the start of its body, then reads the response that comes
    back within `wait_s` seconds without sending the rest (b"" when none does)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as connection:
        connection.sendall(head + body_start)
        received = b""
        deadline = time.monotonic() + wait_s
        while not _complete_response(received) and time.monotonic() < deadline:
            connection.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                piece = connection.recv(65536)
            except TimeoutError:
                break
            if not piece:
                break
            received += piece
        return received


def _complete_response(received: bytes) -> bool:
    head, separator, body = received.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return bool(separator and length and len(body) >= int(length.group(1)))


def docx_bytes(document_xml: bytes | None = None, padding: int = 0) -> bytes:
    """A real .docx (python-docx), its document.xml replaced or padded with `padding` bytes
    of whitespace between elements, which deflate squeezes to almost nothing."""
    import docx

    document = docx.Document()
    document.add_paragraph("虹桥商务区会展活动扶持办法")
    document.add_paragraph("一、扶持对象：在虹桥商务区举办国际性展会的会展主办企业。")
    built = io.BytesIO()
    document.save(built)
    rebuilt = io.BytesIO()
    with zipfile.ZipFile(built) as source, zipfile.ZipFile(rebuilt, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "word/document.xml":
                if document_xml is not None:
                    data = document_xml
                elif padding:
                    data = data.replace(b"<w:body>", b"<w:body>" + b" " * padding, 1)
            target.writestr(item.filename, data)
    return rebuilt.getvalue()


def upload(service: Service, name: str, data: bytes, headers: dict | None = None, **fields):
    return service.client.post(
        "/api/documents",
        files={"file": (name, io.BytesIO(data))},
        data=fields,
        headers=AUTH if headers is None else headers,
    )


# --- 1. Gradio's upload route ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/gradio_api/upload"),
        ("POST", "/gradio_api//upload/"),
        ("GET", "/gradio_api/upload_progress?upload_id=x"),
        ("POST", "/gradio_api/process_recording"),
    ],
)
def test_gradio_file_upload_routes_are_closed(service, method, path):
    response = service.client.request(
        method, path, files={"files": (f"{MARKER}.html", b"<script>1</script>" * 1000)}
        if method == "POST" else None,
    )
    body = assert_error_envelope(response, 404)
    assert body["error"] == "http_404"
    assert service.client.get("/").status_code == 200  # the chat page itself is still there


# --- 2. a body size limit on every route -------------------------------------------------------


def test_bodies_to_the_chat_page_routes_are_bounded(service, caplog, capfd):
    junk = b'{"data": [' + b'"' + MARKER.encode() + b'",' * (1024 * 1024) + b"1]"  # 2 MB
    with caplog.at_level(logging.DEBUG):
        started = time.perf_counter()
        declared = service.client.post(
            "/gradio_api/queue/join", content=junk, headers={"content-type": "application/json"}
        )
        chunked = service.client.post(
            "/gradio_api/queue/join", content=iter([junk[i:i + 65536] for i in range(0, len(junk), 65536)]),
            headers={"content-type": "application/json"},
        )
        elapsed = time.perf_counter() - started
    for response in (declared, chunked):
        assert assert_error_envelope(response, 413)["error"] == "too_large"
    assert elapsed < 5
    captured = capfd.readouterr()
    server_records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    log_lines = len(server_records) + captured.err.count("\n") + captured.out.count("\n")
    assert log_lines < 10, "a refused body must not flood the log"
    assert MARKER not in "".join(r.getMessage() for r in server_records) + captured.err + captured.out


# --- 3. WeChat plain mode once an AES key is set -----------------------------------------------


def wechat_signature(*parts: str) -> str:
    import hashlib

    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def signed_query(**extra: str) -> dict[str, str]:
    timestamp, nonce = str(int(time.time())), f"nonce{time.monotonic_ns()}"
    return {"signature": wechat_signature(WECHAT_TOKEN, timestamp, nonce), "timestamp": timestamp,
            "nonce": nonce, **extra}


def text_message(content: str, user: str = "user-hardening") -> str:
    return (
        f"<xml><ToUserName><![CDATA[gh_policyqa]]></ToUserName>"
        f"<FromUserName><![CDATA[{user}]]></FromUserName><CreateTime>{int(time.time())}"
        f"</CreateTime><MsgType><![CDATA[text]]></MsgType><Content>{content}</Content>"
        f"<MsgId>{time.monotonic_ns()}</MsgId></xml>"
    )


def post_encrypted(service: Service, xml: str) -> httpx.Response:
    query = signed_query(encrypt_type="aes")
    crypto = WeChatCrypto(WECHAT_TOKEN, WECHAT_AES_KEY, WECHAT_APP_ID)
    envelope = crypto.encrypt_message(xml, query["nonce"], query["timestamp"])
    encrypted = ElementTree.fromstring(envelope).findtext("Encrypt")
    query["msg_signature"] = wechat_signature(WECHAT_TOKEN, query["timestamp"], query["nonce"], encrypted)
    return service.client.post("/wechat", params=query, content=envelope.encode())


def test_wechat_refuses_plain_mode_messages_once_an_aes_key_is_set(service):
    asked = len(service.assistant.questions)
    plain = service.client.post(
        "/wechat", params=signed_query(), content=text_message(QUESTION).encode("utf-8")
    )
    assert plain.status_code == 403 and CHINESE.search(plain.text)
    assert len(service.assistant.questions) == asked
    encrypted = post_encrypted(service, text_message(QUESTION))
    assert encrypted.status_code == 200 and "Encrypt" in encrypted.text
    assert service.assistant.questions[asked:] == [QUESTION]


# --- 4. the admin key before the upload --------------------------------------------------------


def test_upload_without_the_admin_key_is_refused_before_its_body_is_read(service):
    boundary = "hardeningboundary"
    head = (
        f"POST /api/documents HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {5 * 1024 * 1024}\r\n\r\n"
    ).encode()
    start = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
    ).encode() + b"x" * 1024
    reply = raw_exchange(service.port, head, start, wait_s=5)
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]


def test_admin_request_without_file_or_key_is_401_not_422(service):
    response = service.client.post("/api/documents")
    assert assert_error_envelope(response, 401)["error"] == "unauthorized"


# --- 5. an index behind its corpus after a crash ------------------------------------------------


def test_serve_start_up_rebuilds_when_the_corpus_differs_from_the_index(tmp_path, monkeypatch):
    import uvicorn
    from click.testing import CliRunner

    from corpus import load_corpus
    from corpus.library import Library
    from ui import cli_serve, kb

    settings = copy_seed_corpus(tmp_path, port=8765)
    indexed = StandInAssistant(load_corpus(settings).documents)  # the index before the crash
    source = tmp_path / "安居补贴办法.txt"
    source.write_text("虹桥商务区青年人才安居补贴办法\n一、补贴标准\n每月补贴2800元。\n", encoding="utf-8")
    Library(settings).add(source)  # stored and acknowledged; the server died before the rebuild

    rebuilt = StandInAssistant(load_corpus(settings).documents)
    apps = []
    monkeypatch.setattr(cli_serve, "settings_with", lambda **flags: settings)
    monkeypatch.setattr(cli_serve, "load_or_build_assistant", lambda _settings: indexed)
    monkeypatch.setattr(kb, "build_and_publish", lambda _settings: (
        rebuilt, kb.BuildOutcome(finished_at="now", seconds=0.0, version="rebuilt")))
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: apps.append(app))

    result = CliRunner().invoke(cli_serve.serve, [])
    assert result.exit_code == 0, result.output
    [app] = apps
    status = app.state.rebuild.status()
    assert status.requested == 1, "a rebuild is pending as soon as the server is up"
    deadline = time.monotonic() + 10
    while app.state.rebuild.status().applied < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.state.assistant is rebuilt

    apps.clear()
    monkeypatch.setattr(cli_serve, "load_or_build_assistant", lambda _settings: rebuilt)
    assert CliRunner().invoke(cli_serve.serve, []).exit_code == 0
    assert apps[0].state.rebuild.status().requested == 0, "an index that is current is kept"


# --- 6. decompression bombs ---------------------------------------------------------------------


def test_docx_that_would_inflate_beyond_the_limit_is_refused_before_parsing(tmp_path):
    from corpus import load_corpus

    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    (corpus_dir / "bomb.docx").write_bytes(docx_bytes(padding=3 * 1024 * 1024))
    (corpus_dir / "good.docx").write_bytes(docx_bytes())
    settings = Settings(corpus_dir=corpus_dir, catalogue_path=tmp_path / "catalogue.json",
                        max_unpacked_document_bytes=1024 * 1024)
    assert (corpus_dir / "bomb.docx").stat().st_size < 64 * 1024
    loaded = load_corpus(settings)
    assert [document.source_file for document in loaded.documents] == ["good.docx"]
    [error] = loaded.errors
    assert error.source_file == "bomb.docx" and "解压后超过大小上限" in error.message


def test_docx_bomb_upload_is_refused_with_413(service):
    before = sorted(p.name for p in service.settings.corpus.corpus_dir.iterdir())
    bomb = docx_bytes(padding=40 * 1024 * 1024)  # over the 32 MB default
    assert len(bomb) < 200 * 1024
    response = upload(service, "会展办法.docx", bomb)
    assert "解压" in assert_error_envelope(response, 413)["message"]
    assert sorted(p.name for p in service.settings.corpus.corpus_dir.iterdir()) == before


def test_pdf_stream_that_would_inflate_beyond_the_limit_is_refused(tmp_path):
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, NameObject

    from corpus import load_corpus

    writer = PdfWriter()
    page = writer.add_blank_page(width=595, height=842)
    content = DecodedStreamObject()
    content.set_data(b"BT /F1 12 Tf 72 720 Td (policy) Tj ET\n" + b" " * (3 * 1024 * 1024))
    page[NameObject("/Contents")] = writer._add_object(content)
    page.compress_content_streams()
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    with open(corpus_dir / "bomb.pdf", "wb") as handle:
        writer.write(handle)
    assert (corpus_dir / "bomb.pdf").stat().st_size < 64 * 1024
    settings = Settings(corpus_dir=corpus_dir, catalogue_path=tmp_path / "catalogue.json",
                        max_unpacked_document_bytes=1024 * 1024)
    [error] = load_corpus(settings).errors
    assert "解压后超过大小上限" in error.message


# --- 7. hostile input gets a clear 4xx ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        pytest.param("/v1/chat/completions",
                     b'{"messages": [{"role": "user", "content": "\\ud800' + MARKER.encode() + b'"}]}',
                     id="v1-lone-surrogate"),
        pytest.param("/v1/chat/completions",
                     b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}',
                     id="v1-lone-surrogate-in-a-part"),
        pytest.param("/v1/chat/completions", b'{"messages": ' + b"[" * 100_000, id="v1-deep-nesting"),
        pytest.param("/api/ask", b"[" * 60_000, id="api-deep-nesting"),
    ],
)
def test_hostile_json_gets_a_4xx_not_a_500(service, path, raw):
    response = service.client.post(path, content=raw, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text[:300]
    assert MARKER not in response.text


@pytest.mark.parametrize(
    "content",
    ["<b>虹桥</b>", "虹桥<b>商务区</b>面积", "<a><b><c>深</c></b></a>"],
)
def test_markup_inside_a_wechat_content_field_is_a_400(service, content):
    asked = len(service.assistant.questions)
    response = post_encrypted(service, text_message(content))
    assert response.status_code == 400 and CHINESE.search(response.text)
    assert len(service.assistant.questions) == asked


def test_docx_with_broken_xml_is_refused_with_422(service):
    broken = b'<?xml version="1.0"?><w:document xmlns:w="x"><w:body><w:p>'
    response = upload(service, "损坏.docx", docx_bytes(document_xml=broken))
    assert "损坏" in assert_error_envelope(response, 422)["message"]


# --- 8. the lower ones --------------------------------------------------------------------------


def test_slowly_sent_body_times_out_with_408(service):
    head = (
        b"POST /api/ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 200\r\n\r\n"
    )
    started = time.monotonic()
    reply = raw_exchange(service.port, head, b'{"question": "', wait_s=BODY_TIMEOUT_S + 5)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert BODY_TIMEOUT_S - 0.5 <= time.monotonic() - started < BODY_TIMEOUT_S + 4
    assert "超时" in reply.split(b"\r\n\r\n", 1)[1].decode("utf-8")


def gradio_submit(service: Service, values_by_type: dict) -> list[dict]:
    """Submits the chat page's question box through Gradio's queue, with a value for each
    input of that event by component type; returns the event's messages."""
    config = service.client.get("/config").json()
    types = {component["id"]: component.get("type") for component in config["components"]}
    textbox = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "pqa-question")
    dependency = next(d for d in config["dependencies"] if [textbox, "submit"] in d["targets"])
    session = f"hardening{time.monotonic_ns()}"
    joined = service.client.post("/gradio_api/queue/join", json={
        "data": [values_by_type.get(types[i]) for i in dependency["inputs"]],
        "fn_index": dependency["id"], "trigger_id": textbox, "session_hash": session,
        "event_data": None,
    })
    assert joined.status_code == 200, joined.text[:300]
    messages = []
    with service.client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                messages.append(json.loads(line[5:]))
                if messages[-1].get("msg") == "process_completed":
                    break
    return messages


def test_chat_text_stays_out_of_the_logs_when_question_logging_is_off(service, caplog, capfd):
    # A conversation the browser makes up: Gradio used to validate it and print every error
    # with the text (and one line per field: thousands for a long one).
    hostile_conversation = [{"role": MARKER, "content": f"{MARKER} 我的身份证号是……"}] * 3000
    with caplog.at_level(logging.DEBUG):
        messages = gradio_submit(service, {
            "textbox": f"{QUESTION}{MARKER}", "chatbot": hostile_conversation,
            "dropdown": [], "checkbox": False,
        })
        time.sleep(0.2)
    captured = capfd.readouterr()
    assert MARKER not in caplog.text + captured.err + captured.out
    assert captured.err.count("\n") + captured.out.count("\n") < 10
    completed = messages[-1]
    assert completed["msg"] == "process_completed" and completed["success"], completed
    assert f"{QUESTION}{MARKER}" in service.assistant.questions


def test_unknown_document_ids_are_not_echoed(service):
    asked = service.client.post("/api/ask", json={"question": QUESTION, "documents": [MARKER]})
    assert assert_error_envelope(asked, 422)["error"] == "unknown_document"
    removed = service.client.delete(f"/api/documents/{MARKER}", headers=AUTH)
    assert_error_envelope(removed, 404)
    replacing = upload(service, "新办法.txt", "某某办法\n一、内容\n测试正文。\n".encode("utf-8"),
                       replaces=MARKER)
    assert_error_envelope(replacing, 404)


def test_feedback_stores_the_answer_the_server_issued(service):
    from ui.feedback import FeedbackStore

    answer = service.client.post("/api/ask", json={"question": QUESTION}).json()
    answer_id = answer["answer_id"]
    forged = {**answer, "answer": f"{MARKER} 伪造的答案", "answer_id": answer_id}
    response = service.client.post("/api/feedback", json={
        "rating": "down", "answer_id": answer_id, "question": MARKER, "answer": forged,
        "comment": "答案不完整",
    })
    assert response.status_code == 201, response.text
    [item] = [i for i in FeedbackStore(service.settings.service.feedback_db).items() if i.id == response.json()["id"]]
    assert item.answer_id == answer_id and item.question == QUESTION
    assert item.answer["answer"] == answer["answer"] and MARKER not in json.dumps(item.to_dict())
    assert item.comment == "答案不完整"

    unknown = service.client.post("/api/feedback", json={"rating": "up", "answer_id": "0" * 32})
    assert assert_error_envelope(unknown, 404)["error"] == "unknown_answer"
    without_id = service.client.post("/api/feedback", json={"rating": "up", "question": QUESTION,
                                                            "answer": answer})
    assert_error_envelope(without_id, 422)


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_upload_folders_left_by_dead_processes_are_removed_on_start(tmp_path, monkeypatch):
    import tempfile

    from fastapi import FastAPI

    from ui import kb

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / f"policyqa-upload-{dead_pid()}-k3j2"
    live = tmp_path / f"policyqa-upload-{os.getpid()}-a9f1"
    old_unowned = tmp_path / "policyqa-upload-x81k2m0q"
    new_unowned = tmp_path / "policyqa-upload-3k1v0b2z"
    for folder in (dead, live, old_unowned, new_unowned):
        folder.mkdir()
        (folder / "upload.pdf").write_bytes(b"%PDF-1.4 half an upload")
    two_hours_ago = time.time() - 7200
    os.utime(old_unowned, (two_hours_ago, two_hours_ago))

    kb.install(FastAPI(), Settings(corpus_dir=tmp_path / "corpus"))
    assert not dead.exists() and not old_unowned.exists()
    assert live.exists() and new_unowned.exists()


def test_admin_key_shorter_than_the_minimum_keeps_the_admin_api_off(tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from ui import kb
    from ui.errors import install_error_handlers

    short_key = "letmein"
    settings = Settings(corpus_dir=tmp_path / "corpus", admin_api_key=short_key)
    app = FastAPI()
    app.state.settings = settings
    install_error_handlers(app)
    kb.install(app, settings)
    app.include_router(kb.router)
    with TestClient(app) as client:
        response = client.get("/api/reindex", headers={"Authorization": f"Bearer {short_key}"})
    assert response.status_code == 503
    assert str(kb.MIN_ADMIN_KEY_CHARS) in response.json()["message"]


def test_renames_into_the_corpus_are_followed_by_a_directory_fsync(tmp_path, monkeypatch):
    from corpus.library import Library

    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    (corpus_dir / "000_seed.txt").write_text("某某通知\n一、内容\n第一份文件的正文。\n", encoding="utf-8")
    settings = Settings(corpus_dir=corpus_dir, catalogue_path=tmp_path / "catalogue.json")
    source = tmp_path / "新办法.txt"
    source.write_text("某某办法\n一、内容\n第二份文件的正文。\n", encoding="utf-8")

    events: list[tuple[str, str]] = []
    real_replace, real_fsync = os.replace, os.fsync

    def recording_replace(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        events.append(("rename", str(Path(dst).parent)))

    def recording_fsync(descriptor):
        real_fsync(descriptor)
        target = os.readlink(f"/proc/self/fd/{descriptor}")
        if os.path.isdir(target):
            events.append(("fsync", target))

    monkeypatch.setattr(os, "replace", recording_replace)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    library = Library(settings)
    added = library.add(source)
    library.remove(added.document.doc_id)

    renames = [i for i, event in enumerate(events) if event[0] == "rename"]
    assert len(renames) >= 3  # catalogue, stored file, the move to .removed/ (and more)
    for position in renames:
        directory = events[position][1]
        assert ("fsync", directory) in events[position + 1:], f"rename into {directory} not synced"
