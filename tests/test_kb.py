"""Managing the knowledge base while the service runs: uploads, replacements, removals and
background rebuilds through a real server on 127.0.0.1, and the `policyqa add/remove/list`
commands, each on its own temporary copy of the seed corpus (never corpus/documents/).

Passage embeddings come from the shared cache in var/cache, so only the few passages of the
documents written here are embedded; each rebuild takes a few seconds.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from corpus.library import DocumentMetadata, Library, LibraryError, extract_metadata
from helpers import copy_seed_corpus
from corpus.settings import PROJECT_ROOT, Settings

ADMIN_KEY = "test-admin-key-4f1c"
# Written into each test document, so its passages are new to the shared embedding cache on
# every run and the tests see real embedding work (and can make it fail).
RUN_MARK = f"（登记号 KB-{uuid.uuid4().hex[:10]}）"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
CHINESE = re.compile(r"[\u4e00-\u9fff]")
REBUILD_TIMEOUT_S = 180

HOUSING_POLICY = f"""上海虹桥国际中央商务区管理委员会关于印发《虹桥商务区青年人才安居补贴办法》的通知
沪虹商管〔2024〕12号
各有关单位：
现将《虹桥商务区青年人才安居补贴办法》印发给你们，请认真遵照执行。{RUN_MARK}
一、补贴对象
在虹桥商务区内注册的企业新引进的全日制硕士研究生，可以申请青年人才安居补贴。
二、补贴标准
符合条件的青年人才每月可领取安居补贴2800元，最长发放36个月。
三、申请方式
申请人通过“虹桥人才一网通”平台在线提交材料，管理委员会在十五个工作日内完成审核。
四、施行日期
本办法自2024年3月1日起施行。
上海虹桥国际中央商务区管理委员会
2024年2月20日
"""
HOUSING_QUESTION = "青年人才安居补贴标准是多少？"


def exhibition_policy(edition: str, amount: str) -> str:
    """A 会展 subsidy measure whose editions differ only in the cap and the year."""
    return f"""虹桥商务区会展活动扶持办法（{edition}）
一、扶持对象
在虹桥商务区举办国际性展会的会展主办企业，可以申请会展活动扶持资金。
二、扶持标准
每个国际性展会的会展活动扶持资金最高为{amount}，按展览面积分档核定。
三、办理流程
主办企业在展会结束后三个月内向管理委员会提交扶持资金申请。{RUN_MARK}
"""


EXHIBITION_QUESTION = "会展活动扶持资金最高是多少？"


# --- a server of our own over a temporary copy of the seed corpus ---------------------------------


def kb_settings(work: Path, **overrides) -> Settings:
    return copy_seed_corpus(work, cache_dir=PROJECT_ROOT / "var" / "cache", **overrides)


@dataclass
class KbServer:
    url: str
    settings: Settings
    app: object
    client: httpx.Client

    def readyz(self) -> dict:
        return self.client.get("/readyz").json()

    def wait_applied(self, ticket: int) -> dict:
        """/readyz's rebuild status once `ticket` is live, or once rebuilding stopped."""
        deadline = time.monotonic() + REBUILD_TIMEOUT_S
        while time.monotonic() < deadline:
            rebuild = self.readyz()["rebuild"]
            if rebuild["applied"] >= ticket or not (rebuild["running"] or rebuild["queued"]):
                return rebuild
            time.sleep(0.2)
        raise AssertionError(f"rebuild {ticket} did not finish in {REBUILD_TIMEOUT_S} s")

    def upload(self, name: str, data: bytes, headers: dict | None = None, **fields) -> httpx.Response:
        return self.client.post(
            "/api/documents",
            files={"file": (name, io.BytesIO(data))},
            data={key: str(value) for key, value in fields.items()},
            headers=AUTH if headers is None else headers,
        )

    def ask(self, question: str, **options) -> dict:
        response = self.client.post("/api/ask", json={"question": question, **options})
        assert response.status_code == 200, response.text[:300]
        return response.json()

    def doc_ids(self) -> set[str]:
        return {document["doc_id"] for document in self.client.get("/api/documents").json()}


def start_server(settings: Settings, assistant):
    """The app over `assistant` on a free loopback port: (app, running BackgroundServer)."""
    from ui.app import create_app
    from ui.server import BackgroundServer, free_port

    port = free_port()
    app = create_app(settings.model_copy(update={"port": port}), assistant=assistant)
    return app, BackgroundServer(app, port).start()


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KbServer]:
    from index import build_index
    from qa import Assistant

    settings = kb_settings(
        tmp_path_factory.mktemp("kb"), admin_api_key=ADMIN_KEY, max_document_bytes=200_000
    )
    build_index(settings, progress=False)
    app, server = start_server(settings, Assistant.load(settings))
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield KbServer(server.url, settings, app, client)
    server.stop()


def corpus_state(settings: Settings) -> dict[str, bytes]:
    """Every file of the corpus folder (hidden ones too) and the catalogue, byte for byte."""
    state = {
        str(path.relative_to(settings.corpus.corpus_dir)): path.read_bytes()
        for path in settings.corpus.corpus_dir.rglob("*")
        if path.is_file() and path.name != ".library.lock"
    }
    state["<catalogue>"] = settings.corpus.catalogue_path.read_bytes()
    return state


def cited_doc_ids(answer: dict) -> set[str]:
    return {citation["doc_id"] for citation in answer["citations"]}


# --- the admin API ---------------------------------------------------------------------------------


def test_uploaded_document_answers_a_question_only_it_answers(kb):
    before = kb.ask(HOUSING_QUESTION)
    assert "2800元" not in before["answer"]
    version_before = kb.readyz()["index_version"]

    response = kb.upload("安居补贴办法.txt", HOUSING_POLICY.encode("utf-8"), region="上海市虹桥国际中央商务区")
    assert response.status_code == 201, response.text
    body = response.json()
    document = body["document"]
    # Read from the text: 文号, issue date, effective date, issuer; the form gave the region.
    assert document["doc_number"] == "沪虹商管〔2024〕12号"
    assert document["date"] == "2024-02-20"
    assert document["effective_date"] == "2024-03-01"
    assert document["issuer"] == "上海虹桥国际中央商务区管理委员会"
    assert document["region"] == "上海市虹桥国际中央商务区"
    assert document["status"] == "in force"
    stored = kb.settings.corpus.corpus_dir / document["source_file"]
    assert stored.read_bytes() == HOUSING_POLICY.encode("utf-8")  # the original, unchanged

    rebuild = kb.wait_applied(body["ticket"])
    assert rebuild["last"]["error"] is None
    assert 0 < rebuild["last"]["embedded"] < 20  # only the new document's passages
    assert rebuild["last"]["cached"] > 200
    ready = kb.readyz()
    assert ready["index_version"] != version_before
    assert document["doc_id"] in kb.doc_ids()
    answer = kb.ask(HOUSING_QUESTION)
    assert answer["answered"] and "2800元" in answer["answer"]
    assert document["doc_id"] in cited_doc_ids(answer)
    assert kb.settings.index.index_dir.is_dir()
    assert not list(kb.settings.index.index_dir.parent.glob(".index.staging-*"))


def test_replacing_a_document_cites_the_new_text_and_flags_the_old(kb):
    old = kb.upload("会展扶持2023.txt", exhibition_policy("2023年版", "50万元").encode("utf-8"))
    assert old.status_code == 201, old.text
    old_id = old.json()["document"]["doc_id"]
    kb.wait_applied(old.json()["ticket"])
    assert "50万元" in kb.ask(EXHIBITION_QUESTION)["answer"]

    new = kb.upload(
        "会展扶持2024.txt", exhibition_policy("2024年版", "80万元").encode("utf-8"), replaces=old_id
    )
    assert new.status_code == 201, new.text
    new_id = new.json()["document"]["doc_id"]
    assert new.json()["replaced"] == {"doc_id": old_id, "action": "superseded"}
    kb.wait_applied(new.json()["ticket"])

    statuses = {d["doc_id"]: d["status"] for d in kb.client.get("/api/documents").json()}
    assert statuses[old_id] == "superseded" and statuses[new_id] == "in force"
    in_force = kb.ask(EXHIBITION_QUESTION, in_force_only=True)
    assert "80万元" in in_force["answer"]
    assert old_id not in cited_doc_ids(in_force) | {p["doc_id"] for p in in_force["passages"]}
    # Asked about the old document alone, the answer says it is superseded.
    old_only = kb.ask(EXHIBITION_QUESTION, documents=[old_id])
    assert "50万元" in old_only["answer"]
    assert "替代" in (old_only["citations"][0]["note"] or "")


def test_replacing_with_removal_takes_the_old_document_out(kb):
    old = kb.upload("会展扶持2022.txt", exhibition_policy("2022年版", "30万元").encode("utf-8"))
    old_id = old.json()["document"]["doc_id"]
    new = kb.upload(
        "会展扶持2022修订.txt", exhibition_policy("2022年修订版", "40万元").encode("utf-8"),
        replaces=old_id, remove_replaced="true",
    )
    assert new.status_code == 201, new.text
    assert new.json()["replaced"] == {"doc_id": old_id, "action": "removed"}
    kb.wait_applied(new.json()["ticket"])
    assert old_id not in kb.doc_ids() and new.json()["document"]["doc_id"] in kb.doc_ids()


def test_removed_document_is_gone_from_documents_and_answers(kb):
    response = kb.upload("停车优惠.md", (
        "# 虹桥商务区新能源汽车停车优惠措施\n\n"
        f"## 一、优惠内容\n\n在虹桥商务区公共停车场停放的新能源汽车，每日首四小时停车费减半收取。{RUN_MARK}\n"
    ).encode("utf-8"))
    assert response.status_code == 201, response.text
    doc_id = response.json()["document"]["doc_id"]
    kb.wait_applied(response.json()["ticket"])
    question = "新能源汽车停车费有什么优惠？"
    assert doc_id in cited_doc_ids(kb.ask(question))

    removed = kb.client.delete(f"/api/documents/{doc_id}", headers=AUTH)
    assert removed.status_code == 200, removed.text
    kept = kb.settings.corpus.corpus_dir / removed.json()["removed"]["kept_at"]
    assert kept.is_file()  # the original is set aside, not deleted
    kb.wait_applied(removed.json()["ticket"])
    assert doc_id not in kb.doc_ids()
    answer = kb.ask(question)
    assert doc_id not in cited_doc_ids(answer) | {p["doc_id"] for p in answer["passages"]}
    assert kb.client.get(f"/api/documents/{doc_id}").status_code == 404

    again = kb.client.delete(f"/api/documents/{doc_id}", headers=AUTH)
    assert again.status_code == 404 and CHINESE.search(again.json()["message"])
    part = kb.client.delete("/api/documents/003-1", headers=AUTH)
    assert part.status_code == 409 and "003-0" in part.json()["message"]


def test_questions_keep_succeeding_during_a_rebuild(kb):
    """Three threads ask over loopback while the index is rebuilt and swapped: no errors."""
    stop = threading.Event()
    results: list[int | str] = []
    lock = threading.Lock()

    def hammer() -> None:
        with httpx.Client(base_url=kb.url, timeout=60) as client:
            while not stop.is_set() and len(results) < 2000:
                try:
                    response = client.post("/api/ask", json={"question": HOUSING_QUESTION})
                    outcome: int | str = response.status_code
                    if response.status_code == 200 and not response.json()["answer"]:
                        outcome = "empty answer"
                except httpx.HTTPError as error:
                    outcome = repr(error)
                with lock:
                    results.append(outcome)

    version_before = kb.readyz()["index_version"]
    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        first = kb.client.post("/api/reindex", headers=AUTH)
        second = kb.client.post("/api/reindex", headers=AUTH)  # queued behind the first
        assert first.status_code == 202 and second.status_code == 202
        during = kb.readyz()
        assert during["status"] == "ready"
        assert during["rebuild"]["running"] is True
        rebuild = kb.wait_applied(second.json()["ticket"])
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert rebuild["applied"] >= second.json()["ticket"] and rebuild["last"]["error"] is None
    assert kb.readyz()["index_version"] != version_before
    assert results and all(outcome == 200 for outcome in results), [r for r in results if r != 200][:5]


def test_a_crashing_rebuild_leaves_the_last_good_index_serving(kb, monkeypatch):
    from index import Index, make_embedder

    embedder = make_embedder(kb.settings.index.embedder)
    calls = {"n": 0}

    def crash_midway(texts):
        calls["n"] += 1
        raise RuntimeError("embedder died halfway through the build")

    manifest = (kb.settings.index.index_dir / "manifest.json").read_bytes()
    ready = kb.readyz()
    # The broken embedder lives in this process: build here, not in the rebuild worker
    # (tests/test_crash_safety.py kills the worker itself).
    manager = kb.app.state.rebuild
    monkeypatch.setattr(manager, "settings", manager.settings.model_copy(update={"rebuild_isolated": False}))
    monkeypatch.setattr(embedder, "embed_passages", crash_midway)
    response = kb.upload("跨境电商.txt", (
        "虹桥商务区跨境电商发展支持措施\n一、仓储支持\n"
        f"对在虹桥商务区新设跨境电商海外仓的企业，给予一次性奖励120万元。{RUN_MARK}\n"
    ).encode("utf-8"))
    assert response.status_code == 201
    doc_id = response.json()["document"]["doc_id"]
    rebuild = kb.wait_applied(response.json()["ticket"])
    assert calls["n"] >= 1
    assert rebuild["applied"] < response.json()["ticket"]
    assert "重建索引失败" in rebuild["last"]["error"]

    after = kb.readyz()
    assert after["index_version"] == ready["index_version"]
    assert after["documents"] == ready["documents"]
    assert doc_id not in kb.doc_ids()
    assert kb.ask(HOUSING_QUESTION)["answered"]
    assert (kb.settings.index.index_dir / "manifest.json").read_bytes() == manifest
    Index.load(kb.settings.index.index_dir, kb.settings)
    assert not list(kb.settings.index.index_dir.parent.glob(".index.staging-*"))

    # The stored document was not lost: once the embedder works, a reindex brings it in.
    monkeypatch.undo()
    ticket = kb.client.post("/api/reindex", headers=AUTH).json()["ticket"]
    assert kb.wait_applied(ticket)["last"]["error"] is None
    assert doc_id in kb.doc_ids()


def _blank_pdf() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "status", "words"),
    [
        ("损坏.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage\x00\xff", 422, "损坏"),
        ("扫描件.pdf", None, 422, "扫描件"),
        ("空文件.txt", b"", 422, "为空"),
        ("表格.xlsx", b"PK\x03\x04 not really a spreadsheet", 415, "不支持"),
        ("无扩展名", "正文".encode("utf-8"), 415, "不支持"),
        ("超大.txt", "政策".encode("utf-8") * 40_000, 413, "大小上限"),
        ("空白.txt", " \n\n \t\n".encode("utf-8"), 422, "正文"),
    ],
)
def test_bad_files_are_refused_and_change_nothing(kb, name, data, status, words):
    data = _blank_pdf() if data is None else data
    before = corpus_state(kb.settings)
    requested = kb.readyz()["rebuild"]["requested"]
    response = kb.upload(name, data)
    assert response.status_code == status, response.text
    message = response.json()["message"]
    assert CHINESE.search(message) and words in message, message
    assert corpus_state(kb.settings) == before
    assert kb.readyz()["rebuild"]["requested"] == requested


def test_upload_far_over_the_limit_is_refused_before_it_is_read(kb):
    before = corpus_state(kb.settings)
    response = kb.upload("巨大.txt", b"x" * (kb.settings.corpus.max_document_bytes + 600_000))
    assert response.status_code == 413
    assert CHINESE.search(response.json()["message"])
    assert corpus_state(kb.settings) == before


def test_bad_metadata_is_refused(kb):
    response = kb.upload("另一份.txt", "某某办法\n一、内容\n这是一份测试文件的正文。\n".encode("utf-8"),
                         status="obsolete")
    assert response.status_code == 422 and "效力状态" in response.json()["message"]
    missing = kb.upload("另一份.txt", "某某办法\n一、内容\n这是一份测试文件的正文。\n".encode("utf-8"),
                        replaces="no-such-doc")
    assert missing.status_code == 404 and "未找到" in missing.json()["message"]
    assert "no-such-doc" not in missing.text  # input is never echoed (issue 16)
    before = corpus_state(kb.settings)
    part = kb.upload("另一份.txt", "某某办法\n一、内容\n这是一份测试文件的正文。\n".encode("utf-8"),
                     replaces="003-1", remove_replaced="true")
    assert part.status_code == 409 and "003-0" in part.json()["message"]
    assert corpus_state(kb.settings) == before


def test_duplicate_upload_is_recognised(kb):
    seed = (PROJECT_ROOT / "corpus" / "documents" / "001_bfabfcb7a022c977.txt").read_bytes()
    before = corpus_state(kb.settings)
    for name, data in (("同一文件.txt", seed), ("另存为.md", seed.decode("utf-8").encode("utf-8-sig"))):
        response = kb.upload(name, data)
        assert response.status_code == 409, response.text
        assert response.json()["duplicate_of"] == "001"
        assert "001" in response.json()["message"]
    assert corpus_state(kb.settings) == before


def test_admin_routes_need_the_key(kb):
    assert kb.client.post("/api/reindex").status_code == 401
    assert kb.client.post("/api/reindex", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert kb.client.delete("/api/documents/001").status_code == 401
    refused = kb.upload("x.txt", "正文".encode("utf-8"), headers={"X-API-Key": "wrong"})
    assert refused.status_code == 401 and "密钥" in refused.json()["message"]
    assert "001" in kb.doc_ids()
    status = kb.client.get("/api/reindex", headers={"X-API-Key": ADMIN_KEY})
    assert status.status_code == 200 and "running" in status.json()["rebuild"]


def test_admin_routes_are_off_without_a_configured_key(kb, tmp_path):
    from qa import Assistant

    settings = kb.settings.model_copy(update={"admin_api_key": None})
    _, server = start_server(settings, Assistant.load(settings))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            response = client.post("/api/reindex", headers=AUTH)
            assert response.status_code == 503
            assert "POLICYQA_ADMIN_API_KEY" in response.json()["message"]
            assert client.delete("/api/documents/001", headers=AUTH).status_code == 503
    finally:
        server.stop()


def test_a_document_marked_superseded_by_another_is_flagged_and_left_out_of_in_force(kb):
    assert kb.client.post("/api/documents/004/supersede", json={"by": "001"}).status_code == 401
    unknown = kb.client.post("/api/documents/004/supersede", json={"by": "no-such"}, headers=AUTH)
    assert unknown.status_code == 404 and CHINESE.search(unknown.json()["message"])
    response = kb.client.post("/api/documents/004/supersede", json={"by": "001"}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["superseded"] == {"doc_id": "004", "by": "001"}
    kb.wait_applied(response.json()["ticket"])
    statuses = {d["doc_id"]: d["status"] for d in kb.client.get("/api/documents").json()}
    assert statuses["004"] == "superseded"
    catalogue = json.loads(kb.settings.corpus.catalogue_path.read_text(encoding="utf-8"))
    assert any("Superseded by 001" in (part.get("note") or "")
               for entry in catalogue["files"].values() for part in entry.get("parts", [entry]))


# --- the document store and the command line --------------------------------------------------------


def test_metadata_is_read_from_the_document():
    found = extract_metadata(
        "上海市人民政府关于印发《某某规划》的通知\n沪府发[2021]2号\n各区人民政府：\n"
        "本办法自2022年10月1日起施行。\n上海市人民政府\n2021年1月5日\n"
    )
    assert found.doc_number == "沪府发〔2021〕2号"
    assert found.date == "2021-01-05"  # the signature date, not the effective date
    assert found.effective_date == "2022-10-01"
    assert found.issuer == "上海市人民政府" and found.kind == "notice"
    assert extract_metadata("虹桥国际中央商务区产业发展规划\n2022 年 8 月\n").date == "2022-08"


def test_library_refuses_a_malformed_catalogue_without_touching_it(tmp_path):
    settings = kb_settings(tmp_path)
    settings.corpus.catalogue_path.write_text('{"files": {"x.txt": {"doc_id": "a b"}}}', encoding="utf-8")
    before = corpus_state(settings)
    source = tmp_path / "new.txt"
    source.write_text(HOUSING_POLICY, encoding="utf-8")
    with pytest.raises(LibraryError) as refused:
        Library(settings).add(source, DocumentMetadata())
    assert "文档目录" in refused.value.message
    assert corpus_state(settings) == before


def test_cli_add_list_remove(tmp_path):
    from index import Index
    from ui.cli import main

    settings = kb_settings(tmp_path)
    where = ["--corpus-dir", str(settings.corpus.corpus_dir), "--catalogue", str(settings.corpus.catalogue_path)]
    # add and remove append to an audit log (tests/test_audit.py): this test's own, not var/'s.
    log = ["--audit-db", str(tmp_path / "audit.sqlite3")]
    runner = CliRunner()
    source = tmp_path / "安居补贴办法.txt"
    source.write_text(HOUSING_POLICY, encoding="utf-8")

    added = runner.invoke(main, ["add", str(source), "--no-build", "--region", "虹桥", *where, *log])
    assert added.exit_code == 0, added.output
    assert "added 005" in added.output and "沪虹商管〔2024〕12号" in added.output
    listed = json.loads(runner.invoke(main, ["list", "--json", *where]).output)
    entry = next(d for d in listed["documents"] if d["doc_id"] == "005")
    assert entry["date"] == "2024-02-20" and entry["region"] == "虹桥" and entry["status"] == "in force"
    table = runner.invoke(main, ["list", *where]).output
    assert "005" in table and "8 documents" in table

    again = runner.invoke(main, ["add", str(source), "--no-build", *where, *log])
    assert again.exit_code == 0 and "unchanged" in again.output and "005" in again.output
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    bad = runner.invoke(main, ["add", str(empty), "--no-build", *where, *log])
    assert bad.exit_code == 1 and "文件为空" in bad.output

    removed = runner.invoke(main, ["remove", "005", "--no-build", *where, *log])
    assert removed.exit_code == 0 and "removed 005" in removed.output
    assert "005" not in runner.invoke(main, ["list", *where]).output
    part = runner.invoke(main, ["remove", "003-1", "--no-build", *where, *log])
    assert part.exit_code == 1 and "003-0" in part.output

    index_dir = tmp_path / "index"
    replaced = runner.invoke(main, [
        "add", str(source), "--replaces", "001", "--title", "青年人才安居补贴办法",
        "--index-dir", str(index_dir), *where, *log,
    ])
    assert replaced.exit_code == 0, replaced.output
    assert "superseded: 001" in replaced.output and "index rebuilt" in replaced.output
    index = Index.load(index_dir, settings.model_copy(update={"index_dir": index_dir}))
    statuses = {document.doc_id: document.status for document in index.documents}
    titles = {document.doc_id: document.title for document in index.documents}
    assert statuses["001"] == "superseded"
    new_id = next(doc_id for doc_id, title in titles.items() if title == "青年人才安居补贴办法")
    assert statuses[new_id] == "in force"


def test_killing_a_build_midway_leaves_the_index_intact(tmp_path):
    """SIGKILL `policyqa add` while it embeds a new document: the previous index stays in
    place and loads; the next build clears the abandoned workspace and catches up."""
    import os
    import signal
    import subprocess
    import sys

    from index import Index, build_index, build_staged, publish

    settings = kb_settings(tmp_path)
    build_index(settings, progress=False)
    manifest = (settings.index.index_dir / "manifest.json").read_bytes()
    edition = tmp_path / "新版方案.txt"
    lines = (PROJECT_ROOT / "corpus" / "documents" / "001_bfabfcb7a022c977.txt").read_text(
        encoding="utf-8").splitlines(keepends=True)
    edition.write_text(lines[0].rstrip("\n") + RUN_MARK + "\n" + "".join(lines[1:]), encoding="utf-8")

    command = [sys.executable, "-c", "from ui.cli import main; main()", "add", str(edition),
               "--corpus-dir", str(settings.corpus.corpus_dir), "--catalogue", str(settings.corpus.catalogue_path),
               "--index-dir", str(settings.index.index_dir), "--audit-db", str(tmp_path / "audit.sqlite3")]
    child = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    workspaces: list[Path] = []
    while not workspaces and child.poll() is None and time.monotonic() < deadline:
        workspaces = list(tmp_path.glob(".index.staging-*"))
        time.sleep(0.02)
    assert workspaces, "the build finished or failed before it could be killed: " + child.stdout.read().decode()
    time.sleep(0.5)  # well into embedding the new document's passages
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    assert (settings.index.index_dir / "manifest.json").read_bytes() == manifest
    index = Index.load(settings.index.index_dir, settings)
    assert "005" not in {document.doc_id for document in index.documents}
    assert any(path.exists() for path in workspaces)  # left behind by the killed process

    staged = build_staged(settings)
    publish(staged, settings)
    assert not list(tmp_path.glob(".index.staging-*"))
    rebuilt = Index.load(settings.index.index_dir, settings)
    assert "005" in {document.doc_id for document in rebuilt.documents}
