"""Quotes are shown literally in the chat page: a real index over a throwaway copy of the
seed corpus plus one plain-text document full of markup (`**` included), a real server, and
Debian's chromium.

Each question asks for one line of that document; the page must show the line exactly as
the document has it (no HTML, Markdown, table or LaTeX rendering), and nothing in it may
run. Questions typed with markup are shown as typed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import copy_seed_corpus
from test_browser import ANSWER_TIMEOUT_MS, ChatPage, browser  # noqa: F401  (fixture)

from corpus.settings import PROJECT_ROOT

DOCUMENT_NAME = "900_literal.txt"
# (question, the line's markup that must be shown as written)
LINES = [
    ("脚本条款的原文是什么？", "<script>window.__pqaPwned=1</script>"),
    ("图片条款的原文是什么？", '<img src=x onerror="window.__pqaPwned=2">'),
    ("公式条款的原文是什么？", "单价 $x$ 元、总价 $$y$$ 元"),
    ("星号条款的原文是什么？", "2*3*4 与 *斜体*"),
    # A plain-text document keeps its `**` (only markdown documents lose their emphasis marks).
    ("必填条款的原文是什么？", "带**号的栏目为必填项"),
    ("下划线条款的原文是什么？", "_a_"),
    ("链接条款的原文是什么？", "[点我](javascript:alert(1))"),
    ("表格条款的原文是什么？", "| 项目 | 金额 |"),
]
DOCUMENT = "字面显示测试办法\n" + "\n".join(
    f"第{number}条 {question[:4]}：本条原文为{markup}，页面应原样显示。"
    for number, (question, markup) in zip("一二三四五六七八", LINES)
) + "\n"
TYPED_WITH_MARKUP = "**不是粗体** _不是斜体_ [点我](javascript:alert(3)) <b>x</b> $y$ 的原文是什么？"


@pytest.fixture(scope="module")
def literal_server(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(base URL, the document's text as the corpus loaded it)."""
    from corpus import load_corpus
    from index import build_index
    from qa import Assistant
    from ui.app import create_app
    from ui.server import BackgroundServer, free_port

    work = tmp_path_factory.mktemp("literal")
    settings = copy_seed_corpus(work, cache_dir=PROJECT_ROOT / "var" / "cache", port=free_port())
    (settings.corpus.corpus_dir / DOCUMENT_NAME).write_text(DOCUMENT, encoding="utf-8")
    loaded = next(d for d in load_corpus(settings).documents if d.source_file == DOCUMENT_NAME)
    build_index(settings, progress=False)
    app = create_app(settings, assistant=Assistant.load(settings))
    with BackgroundServer(app, settings.service.port) as server:
        yield server.url, loaded.text


def test_the_document_keeps_its_markup_when_loaded(literal_server):
    _, text = literal_server
    for _, markup in LINES:
        assert markup in text


@pytest.mark.browser
def test_each_quote_is_shown_exactly_as_the_document_has_it_and_nothing_runs(  # noqa: F811
    browser, literal_server
):
    base, text = literal_server
    document_text = text.replace("\n", "")
    chat = ChatPage(browser, base)
    dialogs: list[str] = []
    chat.page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    try:
        for index, (question, markup) in enumerate(LINES):
            chat.ask(question)
            reply = chat.page.locator("#pqa-chatbot .message-row").last
            assert markup in reply.inner_text(), question
            quotes = reply.locator(".pqa-quote").all_inner_texts()
            assert quotes, question
            for quote in quotes:
                shown = quote.replace("\n", "").removesuffix("…")
                assert shown in document_text, (question, quote)
            # The quote holding the line shows the line's whole text.
            line = next(line for line in text.splitlines() if markup in line)
            assert any(line in quote.replace("\n", "") for quote in quotes), question
        assert reply.locator("mark").count() >= 1  # highlighting still works

        chat.ask(TYPED_WITH_MARKUP)
        typed = chat.page.locator("#pqa-chatbot .message-row.user-row").last
        assert TYPED_WITH_MARKUP in typed.inner_text()

        chatbot = chat.page.locator("#pqa-chatbot")
        # Nothing from the documents or the questions became an element.
        assert chatbot.locator("script, img, a, table, em, .katex").count() == 0
        assert chatbot.locator(".user-row strong, .user-row b").count() == 0
        assert chatbot.locator(".pqa-quote strong, .pqa-quote b").count() == 0  # `**` stayed text
        assert chat.page.evaluate("() => window.__pqaPwned === undefined")
        assert dialogs == []
    finally:
        chat.close()
