"""`ui.render`: what every way out shows alike (the span marked in the answer, the confidence
line, the sources) and how each channel shows it, on answers made here (no index needed)."""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import re

import pytest

from qa.models import Answer, Citation
from ui import render
from ui.render import TERMINAL_BOLD

SENTENCE = "商务区全域环绕虹桥综合交通枢纽，面积 151.4 平方公里。"
SPAN = "151.4 平方公里"


def make_answer(span: str | None = SPAN, confidence: float = 0.93, **changes) -> Answer:
    start = SENTENCE.index(SPAN)
    citation = Citation(
        title="虹桥国际中央商务区产业发展规划",
        section="一、发展基础",
        quote=SENTENCE,
        source_file="003_acd3c122fbf1e800.txt",
        doc_id="003-1",
        chunk_id="aaaa000011112222",
        score=0.9,
        highlights=((start, start + len(SPAN)),) if span else (),
    )
    fields = dict(
        answer=SENTENCE, answered=True, query="虹桥商务区面积多大？", question="虹桥商务区面积多大？",
        citations=(citation,), passages=(citation,), span=span, confidence=confidence,
    )
    return Answer(**{**fields, **changes})


def refused_answer() -> Answer:
    return make_answer(span=None, confidence=0.12, answer="知识库中没有找到与该问题直接相关的内容。",
                       answered=False, citations=())


# --- the helpers --------------------------------------------------------------------------


def test_mark_span_wraps_the_first_occurrence_and_escapes_the_rest():
    assert render.mark_span("面积 151.4 平方公里。", SPAN, "【", "】") == "面积 【151.4 平方公里】。"
    assert render.mark_span("2025年和2025年", "2025年", "**", "**") == "**2025年**和2025年"
    marked = render.mark_span("<b>甲</b>乙<丙>", "乙<丙>", "<mark>", "</mark>", html.escape)
    assert marked == "&lt;b&gt;甲&lt;/b&gt;<mark>乙&lt;丙&gt;</mark>"


@pytest.mark.parametrize("span", [None, "", "  ", "不在文中"])
def test_mark_span_leaves_the_text_unchanged_without_a_span_it_contains(span):
    assert render.mark_span("面积 151.4 平方公里。", span, "【", "】") == "面积 151.4 平方公里。"
    assert render.mark_span("<甲>", span, "<mark>", "</mark>", html.escape) == "&lt;甲&gt;"


def test_confidence_text_reads_label_then_probability():
    assert render.confidence_text(0.93) == "置信度：高（0.93）"
    assert render.confidence_text(0.5) == "置信度：中（0.50）"
    assert render.confidence_text(0.126) == "置信度：低（0.13）"
    assert render.confidence_text(0.7999, "高") == "置信度：高（0.80）"  # the label as sent wins


def test_example_questions_come_from_the_shipped_file():
    shipped = json.loads(render.EXAMPLES_PATH.read_text(encoding="utf-8"))["questions"]
    assert render.example_questions() == tuple(shipped)
    assert len(shipped) >= 3


def test_example_questions_load_from_a_given_file(tmp_path):
    path = tmp_path / "examples.json"
    path.write_text(json.dumps({"questions": ["甲是什么？", " ", "乙有哪些？"]}), encoding="utf-8")
    assert render.example_questions(path) == ("甲是什么？", "乙有哪些？")


@pytest.mark.parametrize(
    "content", [None, "{not json", '["甲是什么？"]', '{"questions": "甲是什么？"}', '{"questions": [1]}']
)
def test_a_missing_or_broken_examples_file_gives_no_examples_and_a_warning(tmp_path, caplog, content):
    path = tmp_path / "examples.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="ui.render"):
        assert render.example_questions(path) == ()
    assert "example questions" in caplog.text and str(path) in caplog.text


# --- the channels -------------------------------------------------------------------------


def show(answer: Answer, channel: str, **options) -> str:
    return render.render(answer, channel, **options)


def test_markdown_channel_marks_the_span_and_shows_the_confidence():
    answer = make_answer(answer="<b>" + SENTENCE)
    message = show(answer, "markdown")
    assert "&lt;b&gt;商务区全域环绕虹桥综合交通枢纽，面积 <mark>151.4 平方公里</mark>。" in message
    assert '<div class="pqa-confidence">置信度：高（0.93）</div>' in message
    assert message.count("<mark>") == 2  # the answer and its citation's quote
    plain = show(make_answer(span=None, confidence=0.0), "markdown")
    assert "<mark>" not in plain and "置信度：低（0.00）" in plain
    refused = show(refused_answer(), "markdown")
    assert "置信度" not in refused and "未在文档中找到答案" in refused
    # The dict an API client (or the chat page's state) holds renders the same.
    assert render.render(answer.to_dict(), "markdown", question=answer.question) == message


MARKDOWN_AND_MATH = "第*1*条 $x$ **加粗** _a_ [点我](javascript:alert(1)) | 表格 | `代码` \\ ~删~ # 标题"


def test_markdown_channel_escapes_every_character_markdown_would_read():
    quote = MARKDOWN_AND_MATH
    citation = dataclasses.replace(make_answer().citations[0], quote=quote, highlights=((0, 5),))
    message = show(make_answer(answer=quote, span="$x$", citations=(citation,)), "markdown")
    # Outside the page's own tags, only character references carry those characters.
    text_only = re.sub(r"&#?\w+;", "", re.sub(r"<[^>]*>", "", message))
    for char in "*$_[]()|`\\~#":
        assert char not in text_only, char
    # Every document character comes back as itself once the browser decodes the HTML.
    texts = re.findall(r'<div class="pqa-quote">(.*?)</div>', message)
    assert [html.unescape(re.sub(r"</?mark>", "", text)) for text in texts] == [quote]
    assert "<mark>第&#42;1&#42;条</mark>" in message


def test_text_channel_marks_the_span_with_brackets_or_terminal_bold():
    answer = make_answer()
    lines = show(answer, "text").splitlines()
    assert lines[0] == "商务区全域环绕虹桥综合交通枢纽，面积 【151.4 平方公里】。"
    assert lines[1] == "置信度：高（0.93）"
    assert lines[-1] == "[1] 《虹桥国际中央商务区产业发展规划》 一、发展基础  (003_acd3c122fbf1e800.txt)"
    bold_on, bold_off = TERMINAL_BOLD
    assert f"{bold_on}151.4 平方公里{bold_off}" in show(answer, "text", marks=TERMINAL_BOLD)
    assert show(make_answer(span=None), "text").splitlines()[0] == SENTENCE
    refused = show(refused_answer(), "text")
    assert "置信度" not in refused and "最接近的段落：" in refused
    follow_up = show(make_answer(question="那它的面积呢？"), "text")
    assert follow_up.splitlines()[0] == "（按上下文理解为：虹桥商务区面积多大？）"
    # the whole question the follow-up was put back into, where there is one, not the search words
    understood = make_answer(question="那它的面积呢？", query="虹桥商务区 面积", understood_as="虹桥商务区的面积是什么？")
    assert show(understood, "text").splitlines()[0] == "（按上下文理解为：虹桥商务区的面积是什么？）"
    assert "按上下文理解为：虹桥商务区的面积是什么？" in show(understood, "markdown", question="那它的面积呢？")
    assert "按上下文理解为" not in show(make_answer(question="虹桥商务区面积多大？"), "text")


def test_wechat_channel_marks_the_span_and_adds_the_confidence_line():
    content = show(make_answer(), "wechat")
    body, _, sources = content.partition("\n\n出处：\n")
    assert body == "商务区全域环绕虹桥综合交通枢纽，面积 【151.4 平方公里】。\n置信度：高（0.93）"
    assert sources == "《虹桥国际中央商务区产业发展规划》一、发展基础"
    assert "置信度" not in show(refused_answer(), "wechat")


def test_wechat_channel_cuts_multibyte_text_at_a_sentence_end_within_2048_bytes():
    long_text = SENTENCE * 60  # 3 bytes a character: about 4,800 bytes
    content = show(make_answer(answer=long_text), "wechat")
    assert 2048 - len(SENTENCE.encode("utf-8")) < len(content.encode("utf-8")) <= 2048
    body, _, sources = content.partition("\n\n出处：\n")
    answer_part, _, confidence = body.rpartition("\n")
    assert confidence == "置信度：高（0.93）" and sources
    assert answer_part.count("【") == answer_part.count("】") == 1
    assert long_text.startswith(answer_part.replace("【", "").replace("】", ""))
    assert answer_part.endswith("。")
    # Four-byte characters (outside the BMP) are never split either.
    wide = ("𠀀" * 30 + "。") * 40
    cut = show(make_answer(answer=wide, span=None), "wechat")
    assert len(cut.encode("utf-8")) <= 2048 and cut.partition("\n")[0].endswith("。")


def test_wechat_channel_never_leaves_a_span_half_marked_at_the_cut():
    # A list span holds a clause end, the last one within the limit: the cut falls inside
    # the span, which is then left unmarked rather than opened and never closed.
    text = "甲" * 590 + "乙乙；丙丙" + "丁" * 400
    content = show(make_answer(answer=text, span="乙乙；丙丙"), "wechat", max_bytes=1900)
    assert content.startswith("甲" * 590 + "乙乙；\n置信度")
    assert "【" not in content and "】" not in content
    assert len(content.encode("utf-8")) <= 1900


def test_openai_channel_puts_the_span_in_markdown_bold_with_the_confidence():
    lines = show(make_answer(), "openai").splitlines()
    assert lines[0] == "商务区全域环绕虹桥综合交通枢纽，面积 **151.4 平方公里**。"
    assert lines[1] == "置信度：高（0.93）"
    assert lines[-1] == "[1] 《虹桥国际中央商务区产业发展规划》 一、发展基础"
    refused = show(refused_answer(), "openai")
    assert "置信度" not in refused and "**" not in refused


LITERAL_SENTENCE = "带**号的栏目为必填项，_a_ 与 $x$ 及 [点我](javascript:alert(1)) 原样，<b>甲</b> | 乙 | 丙 \\ `码` ~~删~~ # 号 &amp; 面积 151.4 平方公里。"


def test_openai_channel_shows_document_text_literally_in_any_markdown_renderer():
    """Rendered by a CommonMark renderer (markdown-it, as many chat clients use), the answer
    reads exactly as the document, with only the span in bold."""
    from markdown_it import MarkdownIt

    start = LITERAL_SENTENCE.index(SPAN)
    answer = make_answer(answer=LITERAL_SENTENCE, citations=(dataclasses.replace(
        make_answer().citations[0], title="规划*草案*_稿_", section="一、[基础]", quote=LITERAL_SENTENCE,
        highlights=((start, start + len(SPAN)),)),))
    rendered = MarkdownIt("commonmark").render(show(answer, "openai"))
    paragraphs = re.findall(r"<p>(.*?)</p>", rendered, flags=re.S)
    first = paragraphs[0].split("\n")[0]
    assert first.count("<strong>") == 1 and f"<strong>{SPAN}</strong>" in first
    assert "<a " not in rendered and "<em>" not in rendered and "<code>" not in rendered and "<del>" not in rendered
    assert html.unescape(re.sub(r"</?strong>", "", first)) == LITERAL_SENTENCE
    assert html.unescape(paragraphs[-1]) == "[1] 《规划*草案*_稿_》 一、[基础]"


def test_an_unknown_channel_is_refused():
    with pytest.raises(ValueError, match="channel"):
        show(make_answer(), "html")
