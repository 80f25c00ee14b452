"""The HTTP API through a real server on 127.0.0.1 over the real seed index."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from qa.models import Answer, Citation, confidence_label
from ui.feedback import FeedbackStore

QUESTION = "虹桥国际开放枢纽包括哪些区域？"
UNANSWERABLE = "火星殖民地的个人所得税起征点是多少？"
CHINESE = re.compile(r"[\u4e00-\u9fff]")
ECHO_MARKER = "ZQXECHOMARKER"


@pytest.fixture(scope="module")
def client(live_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server, timeout=60) as http:
        yield http


def ask(client: httpx.Client, **body) -> httpx.Response:
    return client.post("/api/ask", json=body)


def assert_readable_refusal(response: httpx.Response, *statuses: int) -> dict:
    assert response.status_code in statuses, response.text[:300]
    body = response.json()
    assert CHINESE.search(body["message"]), body
    assert ECHO_MARKER not in response.text
    return body


def test_ask_answers_with_a_citation_of_the_right_document(client):
    response = ask(client, question=QUESTION)
    assert response.status_code == 200
    answer = response.json()
    assert answer["answered"] is True
    assert "长宁区" in answer["answer"]
    assert "001" in {citation["doc_id"] for citation in answer["citations"]}
    citation = answer["citations"][0]
    assert citation["title"] and citation["section"] and citation["quote"]
    for start, end in citation["highlights"]:
        assert 0 <= start < end <= len(citation["quote"])
    assert set(answer) >= {"answer", "answered", "query", "citations", "passages", "latency_ms"}
    assert 0.0 <= answer["confidence"] <= 1.0
    assert answer["confidence_label"] == confidence_label(answer["confidence"])
    if answer["span"]:
        assert answer["span"] in answer["answer"]


def test_follow_up_uses_the_history(client):
    alone = ask(client, question="它的发展目标是什么？").json()
    follow_up = ask(client, question="它的发展目标是什么？", history=[QUESTION]).json()
    assert follow_up["query"] != "它的发展目标是什么？"
    assert "虹桥" in follow_up["query"]
    assert follow_up["query"] != alone["query"]
    cited = {c["doc_id"] for c in follow_up["citations"] or follow_up["passages"][:1]}
    assert cited & {"001"}


def test_unanswerable_question_is_refused_with_passages(client):
    answer = ask(client, question=UNANSWERABLE).json()
    assert answer["answered"] is False
    assert CHINESE.search(answer["answer"])
    assert answer["citations"] == []
    assert answer["passages"], "the closest passages are still listed when refusing"
    assert 0.0 <= answer["confidence"] <= 1.0
    assert answer["confidence_label"] == confidence_label(answer["confidence"])


def test_top_k_and_document_filter(client):
    answer = ask(client, question=QUESTION, top_k=2, documents=["001"]).json()
    assert 1 <= len(answer["passages"]) <= 2
    assert {passage["doc_id"] for passage in answer["passages"]} == {"001"}


def test_in_force_only_keeps_to_documents_in_force(client, assistant):
    excluded = {d.doc_id for d in assistant.documents} - assistant.in_force_doc_ids()
    assert excluded, "the seed corpus has research reports, which are not in force"
    answer = ask(client, question="如何发挥进博会的溢出带动效应？", in_force_only=True).json()
    assert answer["passages"]
    assert not {passage["doc_id"] for passage in answer["passages"]} & excluded


def test_unknown_document_in_the_filter_is_refused(client):
    response = ask(client, question=QUESTION, documents=["001", "no-such-doc"])
    body = assert_readable_refusal(response, 422)
    assert body["error"] == "unknown_document"
    assert "no-such-doc" not in response.text  # input is never echoed (issue 16)


def test_documents_list_and_outline(client, assistant):
    listing = client.get("/api/documents")
    assert listing.status_code == 200
    documents = listing.json()
    assert {d["doc_id"] for d in documents} == {d.doc_id for d in assistant.documents}
    plan = next(d for d in documents if d["doc_id"] == "001")
    assert "虹桥国际开放枢纽" in plan["title"]
    assert plan["sections"] > 0 and plan["source_file"].startswith("001_")
    notice = next(d for d in documents if d["doc_id"] == "002")
    assert notice["doc_number"] == "沪府发〔2021〕2号" and notice["status"] == "excerpt"

    outline = client.get("/api/documents/001").json()
    assert len(outline["outline"]) == plan["sections"]
    assert all(entry["path"] and entry["level"] == len(entry["path"]) for entry in outline["outline"])
    assert any(entry["level"] == 1 for entry in outline["outline"])


def test_unknown_document_id_is_404_with_a_message(client):
    body = assert_readable_refusal(client.get("/api/documents/nope"), 404)
    assert body["error"] == "unknown_document"


def test_health_and_ready(client, assistant):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["embedder"] == assistant.index.manifest["embedder"]
    assert body["corpus_fingerprint"] == assistant.index.manifest["corpus_fingerprint"]
    assert body["index_version"] == assistant.index.version
    assert body["chunks"] == len(assistant.index.chunks) > 0


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"question": ""}, id="empty"),
        pytest.param({"question": " \n\t　"}, id="whitespace"),
        pytest.param({"question": "问" * 501}, id="over-max-question-chars"),
        # Passes the API's own checks; the assistant's QuestionError becomes the 422.
        pytest.param({"question": "\u0000\u0007\u200b"}, id="control-characters-only"),
        pytest.param({}, id="missing-question"),
        pytest.param({"question": [ECHO_MARKER]}, id="question-not-string"),
        pytest.param({"question": 12345}, id="question-number"),
        pytest.param({"question": QUESTION, "history": ECHO_MARKER}, id="history-not-list"),
        pytest.param({"question": QUESTION, "history": [{"q": ECHO_MARKER}]}, id="history-item"),
        pytest.param({"question": QUESTION, "history": [QUESTION] * 11}, id="too-much-history"),
        pytest.param({"question": QUESTION, "history": ["问" * 501]}, id="history-item-too-long"),
        pytest.param({"question": QUESTION, "top_k": ECHO_MARKER}, id="top-k-string"),
        pytest.param({"question": QUESTION, "top_k": 0}, id="top-k-zero"),
        pytest.param({"question": QUESTION, "top_k": 21}, id="top-k-too-big"),
        pytest.param({"question": QUESTION, "in_force_only": ECHO_MARKER}, id="flag-not-bool"),
        pytest.param({"question": QUESTION, "documents": ECHO_MARKER}, id="documents-not-list"),
        pytest.param({"question": QUESTION, ECHO_MARKER: 1}, id="unknown-field"),
    ],
)
def test_bad_json_bodies_get_a_readable_4xx(client, body):
    body_out = assert_readable_refusal(client.post("/api/ask", json=body), 422)
    assert body_out["error"] in {"invalid_request", "empty", "too_long", "history_too_long"}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"question": "\\ud800' + ECHO_MARKER.encode() + b'"}', id="lone-surrogate"),
        pytest.param(b'{"question": "a", "history": ["\\udfff"]}', id="lone-surrogate-history"),
        pytest.param(b'{"question": "' + ECHO_MARKER.encode() + b'", "top_k": 1e999}', id="1e999"),
        pytest.param(b'{"question": 1e999}', id="question-1e999"),
        pytest.param(b'{"question": "a", "top_k": NaN}', id="nan"),
        pytest.param(b'{"question": "' + ECHO_MARKER.encode() + b'",', id="invalid-json"),
        pytest.param(b"\xff\xfe" + ECHO_MARKER.encode(), id="not-utf8"),
        pytest.param(b"[]", id="array-body"),
        pytest.param(b"", id="empty-body"),
    ],
)
def test_malformed_bodies_never_cause_a_500(client, raw):
    response = client.post("/api/ask", content=raw, headers={"content-type": "application/json"})
    assert_readable_refusal(response, 400, 422)


def test_hundred_kilobyte_body_is_refused_before_parsing(client):
    body = json.dumps({"question": ECHO_MARKER + "问" * 100_000}, ensure_ascii=False).encode()
    started = time.perf_counter()
    response = client.post("/api/ask", content=body, headers={"content-type": "application/json"})
    assert_readable_refusal(response, 413)
    assert response.json()["error"] == "too_large"
    assert time.perf_counter() - started < 2


def test_chunked_oversized_body_is_refused(client):
    def chunks():
        yield b'{"question": "'
        for _ in range(100):
            yield "问".encode() * 400
        yield b'"}'

    response = client.post("/api/ask", content=chunks(), headers={"content-type": "application/json"})
    assert_readable_refusal(response, 413)


def test_wrong_method_and_unknown_api_path_are_json_errors(client):
    assert_readable_refusal(client.get("/api/ask"), 405)
    assert_readable_refusal(client.post("/api/documents/001"), 405)


def test_feedback_endpoint_stores_the_rating(client, seed_settings):
    answer = ask(client, question=QUESTION).json()
    response = client.post(
        "/api/feedback",
        json={"rating": "down", "answer_id": answer["answer_id"], "comment": "测试"},
    )
    assert response.status_code == 201, response.text
    stored = {item.id: item for item in FeedbackStore(seed_settings.service.feedback_db).items()}
    item = stored[response.json()["id"]]
    assert item.rating == "down" and item.source == "api" and item.comment == "测试"
    assert item.question == QUESTION and item.answer_id == answer["answer_id"]
    assert item.answer["citations"] == answer["citations"]
    assert_readable_refusal(
        client.post("/api/feedback", json={"rating": "meh", "answer_id": answer["answer_id"]}), 422
    )


def test_request_log_has_one_line_per_request(client, caplog):
    with caplog.at_level(logging.INFO, logger="policyqa.http"):
        ask(client, question=QUESTION)
        client.get("/healthz")
        deadline = time.monotonic() + 5
        while len(_log_lines(caplog)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = _log_lines(caplog)
    asked = next(line for line in lines if line["path"] == "/api/ask")
    assert asked["method"] == "POST" and asked["status"] == 200 and asked["ms"] >= 0
    assert asked["question"] == QUESTION  # seed settings keep log_questions on
    assert any(line["path"] == "/healthz" and "question" not in line for line in lines)


def _log_lines(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "policyqa.http"]


def test_openapi_and_offline_docs(client):
    schema = client.get("/openapi.json").json()
    ask_request = schema["components"]["schemas"]["AskRequest"]
    for name, field in ask_request["properties"].items():
        assert field.get("description"), f"AskRequest.{name} has no description"
    assert "examples" in ask_request["properties"]["question"]
    assert "AskResponse" in schema["components"]["schemas"]
    assert {"/api/ask", "/api/documents", "/api/documents/{doc_id}", "/healthz", "/readyz"} <= set(
        schema["paths"]
    )
    page = client.get("/docs")
    assert page.status_code == 200
    scripts = re.findall(r'src="([^"]+)"', page.text)
    assert scripts and all(src.startswith("/") for src in scripts), scripts
    assert client.get(scripts[0]).status_code == 200


def test_chat_page_is_served_at_root(client):
    page = client.get("/")
    assert page.status_code == 200
    assert "政策问答助手" in page.text
    assert "fonts.googleapis.com" not in page.text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(app) -> Iterator[str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_without_an_index_the_app_is_not_ready_until_an_assistant_is_set(
    tmp_path, seed_settings, assistant, caplog
):
    from ui.app import create_app

    settings = seed_settings.model_copy(
        update={
            "index_dir": tmp_path / "no-index",
            "feedback_db": tmp_path / "fb.sqlite3",
            "log_questions": False,
        }
    )
    app = create_app(settings)
    with (
        caplog.at_level(logging.INFO, logger="policyqa.http"),
        running(app) as base,
        httpx.Client(base_url=base, timeout=60) as http,
    ):
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 503
        body = assert_readable_refusal(http.post("/api/ask", json={"question": QUESTION}), 503)
        assert body["error"] == "not_ready"
        # The swap a rebuilt index uses: one assignment, picked up by the next request.
        app.state.assistant = assistant
        assert http.get("/readyz").status_code == 200
        assert http.post("/api/ask", json={"question": QUESTION}).json()["answered"] is True
        # A broken assistant (fault injection) gives the generic 500, not a traceback.
        app.state.assistant = object()
        body = assert_readable_refusal(
            http.post("/api/ask", json={"question": ECHO_MARKER}), 500
        )
        assert body["error"] == "internal_error" and "Traceback" not in body["message"]
    assert "unhandled error" in caplog.text
    asked = [line for line in _log_lines(caplog) if line["path"] == "/api/ask"]
    assert asked and all("question" not in line for line in asked)  # log_questions off
    assert QUESTION not in caplog.text


class FixedAnswerAssistant:
    """Stands in for the assistant (and its reader) where only the HTTP layer is tested:
    every question gets `answer`."""

    def __init__(self, answer: Answer):
        self.answer = answer
        self.documents: list = []

    def ask(self, question, history=(), **options) -> Answer:
        return self.answer


def test_ask_returns_the_span_and_the_readers_confidence_as_documented(tmp_path, seed_settings):
    from ui.app import create_app
    from ui.schemas import AskResponse

    quote = "商务区全域环绕虹桥综合交通枢纽，面积 151.4 平方公里。"
    start = quote.index("151.4")
    citation = Citation(
        title="虹桥国际中央商务区产业发展规划", section="一、发展基础", quote=quote,
        source_file="003_acd3c122fbf1e800.txt", doc_id="003-1", chunk_id="aaaa000011112222",
        score=0.9, highlights=((start, start + len("151.4 平方公里")),),
    )
    answer = Answer(
        answer=quote, answered=True, query="虹桥商务区面积多大？", citations=(citation,),
        span="151.4 平方公里", confidence=0.934567,
    )
    settings = seed_settings.model_copy(
        update={"index_dir": tmp_path / "no-index", "feedback_db": tmp_path / "fb.sqlite3"}
    )
    app = create_app(settings, assistant=FixedAnswerAssistant(answer))
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        body = http.post("/api/ask", json={"question": "虹桥商务区面积多大？"}).json()
        schema = http.get("/openapi.json").json()["components"]["schemas"]["AskResponse"]
    assert re.fullmatch(r"[0-9a-f]{32}", body.pop("answer_id"))
    assert body == answer.to_dict()
    assert (body["confidence"], body["confidence_label"]) == (0.9346, "高")
    quote_out = body["citations"][0]["quote"]
    assert [quote_out[s:e] for s, e in body["citations"][0]["highlights"]] == ["151.4 平方公里"]
    assert AskResponse.model_validate(body).confidence == 0.9346

    for name in ("confidence", "confidence_label"):
        assert name in schema["required"]
        assert CHINESE.match(schema["properties"][name]["description"]), "Chinese first"
    confidence = schema["properties"]["confidence"]
    assert (confidence["minimum"], confidence["maximum"]) == (0, 1)
    for example in schema["examples"]:
        validated = AskResponse.model_validate(example)
        assert validated.confidence_label == confidence_label(validated.confidence)
        citation_out = example["citations"][0]
        assert [citation_out["quote"][s:e] for s, e in citation_out["highlights"]] == [example["span"]]


def test_unknown_api_path_is_a_json_404(client):
    body = assert_readable_refusal(client.get("/api/no-such-endpoint"), 404)
    assert body["error"] == "http_404"


def test_serve_start_up_builds_a_missing_index_then_loads_it(tmp_path, seed_settings, capsys):
    from ui.cli_serve import load_or_build_assistant

    settings = seed_settings.model_copy(update={"index_dir": tmp_path / "index"})
    started = load_or_build_assistant(settings)
    assert "building" in capsys.readouterr().out
    assert {d.doc_id for d in started.documents} >= {"001"}
    assert started.ask(QUESTION).answered is True


def test_serve_start_up_refuses_a_corrupt_index_with_a_message(tmp_path, seed_settings):
    import click

    from ui.cli_serve import load_or_build_assistant

    index_dir = tmp_path / "index"
    index_dir.mkdir()
    (index_dir / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(click.ClickException) as refused:
        load_or_build_assistant(seed_settings.model_copy(update={"index_dir": index_dir}))
    assert "policyqa build" in refused.value.message
    assert (index_dir / "manifest.json").read_text(encoding="utf-8") == "{not json"  # untouched


def test_cors_allows_only_the_configured_origins(tmp_path, seed_settings, assistant):
    from ui.app import create_app

    settings = seed_settings.model_copy(
        update={"cors_origins": ["http://portal.example"], "feedback_db": tmp_path / "fb.sqlite3"}
    )
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    with running(create_app(settings, assistant=assistant)) as base, httpx.Client(base_url=base) as http:
        allowed = http.options("/api/ask", headers={"Origin": "http://portal.example", **preflight})
        assert allowed.headers.get("access-control-allow-origin") == "http://portal.example"
        other = http.options("/api/ask", headers={"Origin": "http://elsewhere.example", **preflight})
        assert "access-control-allow-origin" not in other.headers
        simple = http.get("/api/documents", headers={"Origin": "http://portal.example"})
        assert simple.headers.get("access-control-allow-origin") == "http://portal.example"


def test_without_cors_origins_no_cross_origin_header_is_sent(client):
    response = client.get("/api/documents", headers={"Origin": "http://portal.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
