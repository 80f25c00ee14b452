"""The knowledge-base page (/admin) in a real browser against a real server over a throwaway
copy of the seed corpus: log in with the admin key, upload a document, see the chat page cite
it, remove it, see the question refused (issue 14)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import expect

from test_browser import ANSWER_TIMEOUT_MS, ChatPage, browser  # noqa: F401 (a fixture)
from test_kb import ADMIN_KEY, RUN_MARK, kb_settings, start_server

TITLE = "虹桥商务区青年创客联盟会员服务办法"
POLICY = f"""{TITLE}
一、服务对象
在虹桥商务区注册的青年创业团队，可以申请成为青年创客联盟会员。{RUN_MARK}
二、服务内容
青年创客联盟会员每年可以免费使用共享会议室120小时。
"""
# No seed document names the 联盟: refused until the page adds this one.
QUESTION = "青年创客联盟会员每年可以免费使用共享会议室多少小时？"
REBUILD_TIMEOUT_MS = 180_000
DONE_OR_REFUSED = re.compile("✅|❌")


@pytest.fixture(scope="module")
def admin_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, str]]:
    from index import build_index
    from qa import Assistant

    settings = kb_settings(tmp_path_factory.mktemp("admin"), admin_api_key=ADMIN_KEY,
                           max_document_bytes=200_000)
    build_index(settings, progress=False)
    app, server = start_server(settings, Assistant.load(settings))
    yield app, server.url
    server.stop()


@pytest.fixture(scope="module")
def admin_server(admin_app) -> str:
    return admin_app[1]


class AdminPage:
    """The knowledge-base page, driven as staff do, in a Chinese-language browser."""

    def __init__(self, browser, base_url: str):
        self.context = browser.new_context(locale="zh-CN", viewport={"width": 1200, "height": 1000})
        self.page = self.context.new_page()
        self.page.goto(base_url + "/admin/", wait_until="load")

    def log_in(self, key: str) -> None:
        self.page.locator("input[type=password]").wait_for(timeout=ANSWER_TIMEOUT_MS)
        self.page.locator("input:not([type=password]), textarea").first.fill("admin")
        self.page.locator("input[type=password]").fill(key)
        self.page.get_by_role("button", name="登录").click()

    def tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name).click()

    def result(self, containing: str | re.Pattern) -> str:
        result = self.page.locator("#pqa-admin-result")
        expect(result).to_contain_text(containing, timeout=ANSWER_TIMEOUT_MS)
        return result.inner_text()

    def wait_until_rebuilt(self, result: str) -> None:
        """Until the rebuild that `result` (an action's message) names is live."""
        ticket = re.search(r"重建任务 (\d+)", result).group(1)
        self.tab("索引重建")
        expect(self.page.locator("#pqa-admin-rebuild")).to_contain_text(
            re.compile(f"索引已是最新.*已提交的修改：{ticket}，已生效：{ticket}。", re.S),
            timeout=REBUILD_TIMEOUT_MS,
        )

    def upload(self, path, title: str) -> str:
        self.tab("上传文档")
        self.page.locator("#pqa-admin-file input[type=file]").set_input_files(str(path))
        # The upload finished once Gradio lists the file (name and suffix in separate cells).
        expect(self.page.locator("#pqa-admin-file")).to_contain_text(path.stem, timeout=ANSWER_TIMEOUT_MS)
        self.page.locator("#pqa-admin-title textarea, #pqa-admin-title input").fill(title)
        self.page.locator("#pqa-admin-upload").click()
        return self.result(DONE_OR_REFUSED)

    def choose(self, doc_id: str, picker: str = "chosen") -> None:
        self.tab("替代与删除")
        self.page.locator(f"#pqa-admin-{picker} input").click()
        self.page.locator("[data-testid=dropdown-option]", has_text=doc_id).first.click()

    def close(self) -> None:
        self.context.close()


def ask_in_chat(browser, url: str) -> str:
    chat = ChatPage(browser, url)
    try:
        chat.ask(QUESTION)
        return chat.last_answer_text()
    finally:
        chat.close()


@pytest.mark.browser
def test_a_document_uploaded_on_the_page_is_cited_and_once_removed_refused(
    browser, admin_app, admin_server, tmp_path
):
    assert "未在文档中找到答案" in ask_in_chat(browser, admin_server)
    source = tmp_path / "创客联盟会员服务办法.txt"
    source.write_text(POLICY, encoding="utf-8")
    admin = AdminPage(browser, admin_server)
    try:
        admin.log_in(ADMIN_KEY)
        expect(admin.page.locator("#pqa-admin-documents")).to_contain_text(
            "虹桥国际开放枢纽建设总体方案", timeout=ANSWER_TIMEOUT_MS
        )
        uploaded = admin.upload(source, TITLE)
        assert "✅ 已上传" in uploaded, uploaded
        doc_id = re.search(r"文档 (\S+)《", uploaded).group(1)
        admin.wait_until_rebuilt(uploaded)
        admin.tab("文档列表")
        expect(admin.page.locator("#pqa-admin-documents")).to_contain_text(TITLE)
        expect(admin.page.locator("#pqa-admin-documents")).to_contain_text("现行有效")

        answer = ask_in_chat(browser, admin_server)
        assert "120小时" in answer and f"《{TITLE}》" in answer

        admin.choose("004")
        admin.choose(doc_id, picker="by")
        admin.page.locator("#pqa-admin-supersede").click()
        superseded = admin.result(f"文档 004 已标记为已替代（由 {doc_id} 替代）")
        assert "✅" in superseded
        admin.wait_until_rebuilt(superseded)
        admin.tab("文档列表")
        expect(admin.page.locator("#pqa-admin-documents")).to_contain_text("已被替代")

        admin.choose(doc_id)
        admin.page.locator("#pqa-admin-remove").click()
        removed = admin.result(f"文档 {doc_id} 已删除")
        assert "✅" in removed
        admin.wait_until_rebuilt(removed)
        admin.tab("文档列表")
        expect(admin.page.locator("#pqa-admin-documents")).not_to_contain_text(TITLE)
    finally:
        admin.close()
    refused = ask_in_chat(browser, admin_server)
    assert "未在文档中找到答案" in refused and TITLE not in refused
    # The page's changes are in the audit log (ui.audit) with the client's address.
    entries = {(e.action, e.doc_id, e.result, e.client) for e in admin_app[0].state.audit.entries()}
    assert {("upload", doc_id, "ok", "127.0.0.1"), ("remove", doc_id, "ok", "127.0.0.1")} <= entries


@pytest.mark.browser
def test_the_page_refuses_bad_files_and_wrong_keys_in_chinese(browser, admin_server, tmp_path):
    wrong = AdminPage(browser, admin_server)
    try:
        wrong.log_in("not-the-admin-key-at-all")
        expect(wrong.page.get_by_text("凭据不正确")).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
        assert wrong.page.locator("#pqa-admin-documents").count() == 0
    finally:
        wrong.close()
    empty = tmp_path / "空文件.txt"
    empty.write_bytes(b"")
    admin = AdminPage(browser, admin_server)
    try:
        admin.log_in(ADMIN_KEY)
        refused = admin.upload(empty, "空")
        assert "❌" in refused and re.search(r"[\u4e00-\u9fff]", refused), refused
    finally:
        admin.close()
    # Nothing behind the page answers without the login, its upload route included.
    with httpx.Client(base_url=admin_server, timeout=30) as client:
        assert client.get("/admin/config").status_code == 401
        assert client.post("/admin/gradio_api/upload", files={"files": ("a.txt", b"x")}).status_code == 401


def test_the_page_is_off_without_an_admin_key(live_server):
    with httpx.Client(base_url=live_server, timeout=30) as client:
        page = client.get("/admin/")
    assert "知识库管理" not in page.text


def test_the_rebuild_progress_reads_running_queued_and_failed_in_chinese():
    from ui.admin import rebuild_text
    from ui.kb import BuildOutcome, RebuildStatus

    done = BuildOutcome("2026-01-01T00:00:00+00:00", 2.5, "v2", 8, 300, 4, 296)
    running = rebuild_text(RebuildStatus(True, True, 3, 2, done, "2026-01-01T00:00:00+00:00"))
    assert "正在重建索引" in running and "已用时" in running and "再重建一次" in running
    assert "已提交的修改：3，已生效：2" in running and "新嵌入 4 个" in running
    failed = BuildOutcome("2026-01-01T00:01:00+00:00", 1.0, error="重建索引失败，仍使用原索引：磁盘已满")
    behind = rebuild_text(RebuildStatus(False, False, 3, 2, failed))
    assert "上次重建失败" in behind and "磁盘已满" in behind
