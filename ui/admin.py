"""The knowledge-base page for staff (Gradio Blocks), mounted at /admin by `ui.app.create_app`
only while a valid `POLICYQA_ADMIN_API_KEY` is configured.

Gradio's own login (`auth=`) asks for the key before the page, its queue, its files or its
upload route answer anything; the key is compared in constant time (`ui.deps.keys_match`).
Staff list the documents with their metadata and status, upload .txt / .md / .pdf / .docx
with title, issuer, 文号, date and status (optionally replacing a document), mark a
document superseded by another, remove one, and watch the background rebuild. Every change
goes through the same functions as the admin API (`ui.kb.store_upload`, `remove`,
`supersede` over `corpus.library.Library`), is written to the audit log when the app has one
(`ui.audit`), and every message shown is Chinese.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gradio as gr
from pydantic import ValidationError

from corpus.library import SUPPORTED_SUFFIXES, Library, LibraryError
from corpus.models import Document, Status, metadata_problem
from corpus.settings import Settings
from ui import kb
from ui.deps import keys_match
from ui.render import literal_html
from ui.schemas import UploadForm

log = logging.getLogger("policyqa.admin")

ADMIN_PATH = "/admin"
LOGIN_MESSAGE = "知识库管理：请在“密码”一栏输入管理密钥（POLICYQA_ADMIN_API_KEY），用户名任填（例如 admin）。"
UNEXPECTED = "操作失败：系统出错，请稍后再试；详情见服务器日志。"
NO_FILE = "请先选择要上传的文件（支持 .txt、.md、.pdf、.docx）。"
NO_DOCUMENT = "请先选择文档。"
COLUMNS = ["文档编号", "效力状态", "标题", "文号", "发文日期", "发文机关", "生效日期", "来源文件"]
COLUMN_WIDTHS = ["8%", "10%", "24%", "13%", "10%", "14%", "9%", "12%"]
STATUS_CHOICES = [(status.label, status.value) for status in Status]
NOT_REPLACING = ("（不替代）", "")


def key_checker(settings: Settings) -> Callable[[str, str], bool]:
    """Gradio's `auth` callable: any user name, the admin key as the password."""

    def check(username: str, password: str) -> bool:
        return keys_match(password, settings.service.admin_api_key or "")

    return check


def _status_label(document: Document) -> str:
    return document.status.label if document.status else "（未标注）"


def document_rows(documents: list[Document]) -> list[list[str]]:
    return [
        [d.doc_id, _status_label(d), d.title, d.doc_number or "", d.date or "", d.issuer or "",
         d.effective_date or "", d.source_file]
        for d in documents
    ]


def rebuild_text(status: kb.RebuildStatus) -> str:
    """Where rebuilding stands, for staff."""
    if status.running:
        state = "正在重建索引……"
        if status.started_at:
            elapsed = datetime.now(timezone.utc) - datetime.fromisoformat(status.started_at)
            state += f"（已用时 {max(int(elapsed.total_seconds()), 0)} 秒）"
        if status.queued:
            state += "；之后还将再重建一次，以包含最新的修改"
    elif status.applied >= status.requested:
        state = "索引已是最新：所有修改都已生效。"
    else:
        state = "上次重建失败，部分修改尚未生效；可在下方重新发起重建。"
    lines = [f"**{state}**", f"已提交的修改：{status.requested}，已生效：{status.applied}。"]
    last = status.last
    if last is not None and last.error:
        lines.append(f"最近一次（{last.finished_at}，用时 {last.seconds} 秒）：{literal_html(last.error)}")
    elif last is not None:
        lines.append(
            f"最近一次（{last.finished_at}，用时 {last.seconds} 秒）：索引版本 {last.version}，"
            f"文档 {last.documents} 个，段落 {last.chunks} 个（新嵌入 {last.embedded} 个）。"
        )
        lines += [f"未能读取：{literal_html(message)}" for message in last.skipped_files]
    return "\n\n".join(lines)


class AdminHandlers:
    """The page's callbacks. `state` is the FastAPI app's state: its rebuild manager and,
    when present, its audit log."""

    def __init__(self, settings: Settings, state: Any):
        self.settings = settings
        self.state = state

    def _record(self, request: gr.Request | None, action: str, doc_id: str | None,
                result: str, detail: str | None = None) -> None:
        audit = getattr(self.state, "audit", None)
        if audit is None:
            return
        client = request.client.host if request is not None and request.client else None
        try:
            audit.record(action, doc_id, result, client, detail=detail)
        except Exception:  # the change is made; a failing log must not hide that from staff
            log.exception("audit log failed for %s %s", action, doc_id)

    def refresh(self) -> tuple[Any, ...]:
        """The document table, the load errors, and the choices of every document picker."""
        loaded = Library(self.settings).load()
        choices = [(f"{d.doc_id}　{d.title}", d.doc_id) for d in loaded.documents]
        errors = "\n\n".join(f"未能读取：{literal_html(e.message)}" for e in loaded.errors)
        return (
            gr.update(value=document_rows(loaded.documents)),
            errors,
            gr.update(choices=[NOT_REPLACING, *choices], value=""),
            gr.update(choices=choices, value=None),
            gr.update(choices=[NOT_REPLACING, *choices], value=""),
        )

    def rebuild_status(self) -> str:
        return rebuild_text(self.state.rebuild.status())

    def _run(self, request: gr.Request | None, action: str, doc_id: str | None,
             change: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], str]) -> str:
        """Makes one change, records it, and says how it went."""
        try:
            reply = change()
        except LibraryError as error:
            self._record(request, action, doc_id, error.code, error.message)
            return f"❌ {literal_html(error.message)}"
        except Exception:
            log.exception("admin page: %s %s failed", action, doc_id)
            self._record(request, action, doc_id, "internal_error")
            return f"❌ {UNEXPECTED}"
        self._record(request, action, reply.get("document", {}).get("doc_id", doc_id), "ok")
        return done(reply) + f"（重建任务 {reply['ticket']}，进度见“索引重建”页）"

    def upload(self, path: str | None, title: str, issuer: str, doc_number: str, date: str,
               status: str, replaces: str, remove_replaced: bool,
               request: gr.Request) -> str:
        if not path:
            return f"❌ {NO_FILE}"
        try:
            form = UploadForm(title=title, issuer=issuer, doc_number=doc_number, date=date,
                              status=status or None, replaces=replaces, remove_replaced=remove_replaced)
        except ValidationError as error:
            return f"❌ {metadata_problem(error)}。"
        source = Path(path)
        action = "replace" if form.replaces else "upload"

        def done(reply: dict[str, Any]) -> str:
            document = reply["document"]
            text = f"✅ 已上传：文档 {document['doc_id']}《{literal_html(document['title'])}》"
            if reply["replaced"]:
                verb = "已标记为已替代" if reply["replaced"]["action"] == "superseded" else "已删除"
                text += f"；原文档 {reply['replaced']['doc_id']} {verb}"
            return text

        try:
            return self._run(request, action, form.replaces, lambda: kb.store_upload(
                self.settings, self.state.rebuild, source, source.name, form), done)
        finally:
            # Gradio keeps uploads in its cache; the library has its own copy now.
            with contextlib.suppress(OSError):
                os.unlink(source)

    def supersede(self, doc_id: str | None, by: str, request: gr.Request) -> str:
        if not doc_id:
            return f"❌ {NO_DOCUMENT}"
        return self._run(
            request, "supersede", doc_id,
            lambda: kb.supersede(self.settings, self.state.rebuild, doc_id, by or None),
            lambda reply: f"✅ 文档 {doc_id} 已标记为已替代" + (f"（由 {by} 替代）" if by else ""),
        )

    def remove(self, doc_id: str | None, request: gr.Request) -> str:
        if not doc_id:
            return f"❌ {NO_DOCUMENT}"
        return self._run(
            request, "remove", doc_id,
            lambda: kb.remove(self.settings, self.state.rebuild, doc_id),
            lambda reply: f"✅ 文档 {doc_id} 已删除（原文件保存在 {literal_html(reply['removed']['kept_at'])}）",
        )

    def reindex(self, request: gr.Request) -> str:
        ticket = self.state.rebuild.request()
        self._record(request, "reindex", None, "ok")
        return f"✅ 已发起重建（重建任务 {ticket}）"


def build_admin(settings: Settings, state: Any) -> gr.Blocks:
    """The knowledge-base page; mount it with `auth=key_checker(settings)`."""
    handlers = AdminHandlers(settings, state)
    with gr.Blocks(title="知识库管理 · 政策问答助手", analytics_enabled=False) as page:
        gr.Markdown("## 知识库管理\n上传、替代或删除政策文件；每次修改后索引在后台重建，"
                    "重建完成前问答仍使用原索引。")
        result = gr.Markdown(elem_id="pqa-admin-result")
        with gr.Tab("文档列表"):
            table = gr.Dataframe(headers=COLUMNS, column_widths=COLUMN_WIDTHS, interactive=False,
                                 wrap=True, elem_id="pqa-admin-documents")
            errors = gr.Markdown(elem_id="pqa-admin-errors")
            refresh = gr.Button("刷新", elem_id="pqa-admin-refresh")
        with gr.Tab("上传文档"):
            file = gr.File(label="文件（.txt .md .pdf .docx）", file_types=list(SUPPORTED_SUFFIXES),
                           type="filepath", elem_id="pqa-admin-file")
            with gr.Row():
                title = gr.Textbox(label="标题（留空则取文中标题）", elem_id="pqa-admin-title")
                issuer = gr.Textbox(label="发文机关", elem_id="pqa-admin-issuer")
            with gr.Row():
                doc_number = gr.Textbox(label="文号", elem_id="pqa-admin-doc-number")
                date = gr.Textbox(label="发文日期（YYYY-MM-DD）", elem_id="pqa-admin-date")
                status = gr.Dropdown(label="效力状态", choices=STATUS_CHOICES,
                                     value=Status.IN_FORCE.value, elem_id="pqa-admin-status")
            with gr.Row():
                replaces = gr.Dropdown(label="替代已有文档（可选）", choices=[NOT_REPLACING], value="",
                                       elem_id="pqa-admin-replaces")
                remove_replaced = gr.Checkbox(label="删除被替代的文档（默认仅标记为已替代）",
                                              elem_id="pqa-admin-remove-replaced")
            upload = gr.Button("上传", variant="primary", elem_id="pqa-admin-upload")
        with gr.Tab("替代与删除"):
            chosen = gr.Dropdown(label="文档", choices=[], elem_id="pqa-admin-chosen")
            by = gr.Dropdown(label="替代它的文档（可选）", choices=[NOT_REPLACING], value="",
                             elem_id="pqa-admin-by")
            with gr.Row():
                supersede = gr.Button("标记为已替代", elem_id="pqa-admin-supersede")
                remove = gr.Button("删除文档", variant="stop", elem_id="pqa-admin-remove")
        with gr.Tab("索引重建"):
            progress = gr.Markdown(elem_id="pqa-admin-rebuild")
            reindex = gr.Button("重新建立索引", elem_id="pqa-admin-reindex")
        timer = gr.Timer(1.0)

        lists = [table, errors, replaces, chosen, by]
        timer.tick(handlers.rebuild_status, None, progress, api_name=False, show_progress="hidden")
        page.load(handlers.refresh, None, lists, api_name=False)
        page.load(handlers.rebuild_status, None, progress, api_name=False)
        refresh.click(handlers.refresh, None, lists, api_name=False)
        upload.click(
            handlers.upload,
            [file, title, issuer, doc_number, date, status, replaces, remove_replaced],
            result, api_name=False,
        ).then(handlers.refresh, None, lists, api_name=False)
        supersede.click(handlers.supersede, [chosen, by], result, api_name=False).then(
            handlers.refresh, None, lists, api_name=False)
        remove.click(handlers.remove, [chosen], result, api_name=False).then(
            handlers.refresh, None, lists, api_name=False)
        reindex.click(handlers.reindex, None, result, api_name=False)
    page.queue(default_concurrency_limit=1)  # one change at a time, in order
    return page
