"""How an answer reads in every way out: `render(answer, channel)`.

    text      the terminal (`policyqa ask`, `policyqa chat`): span in 【】 (or terminal bold),
              numbered sources with their files
    markdown  the chat page's message: HTML inside Markdown, every document character
              escaped so that neither HTML nor Markdown re-interprets it; span in <mark>
    wechat    WeChat / WeCom passive replies: plain text, span in 【】, cut at a sentence end
              within 2048 bytes of UTF-8 so the confidence line and the sources still fit
    openai    the OpenAI-compatible API's message content: span in Markdown **bold**, the
              documents' Markdown characters backslash-escaped, sources as
              "[1] 《title》 section" lines

Every channel shows the same things the same way: the answer (or the refusal), the span
marked inside it, the confidence line when answered, then the sources. Also here: the example
questions every way in offers.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from qa.models import Answer, confidence_label

logger = logging.getLogger(__name__)

EXAMPLES_PATH = Path(__file__).with_name("examples.json")

Channel = Literal["text", "markdown", "wechat", "openai"]

PLAIN_MARKS = ("【", "】")
MARKDOWN_MARKS = ("**", "**")
HTML_MARKS = ("<mark>", "</mark>")
# Bold on, bold off: how a terminal shows the span when stdout is one.
TERMINAL_BOLD = ("\x1b[1m", "\x1b[22m")
# Both WeChat and WeCom cut passive text replies at 2048 bytes of UTF-8.
WECHAT_TEXT_LIMIT_BYTES = 2048
REFUSAL_TEXT = "抱歉，现有政策文件中没有找到这个问题的答案。"
REFUSAL_TITLE = "未在文档中找到答案"
REFUSAL_PASSAGES = 3  # enough to show what the documents do say, short enough for a phone
PASSAGE_PREVIEW_CHARS = 160
TERMINAL_PREVIEW_CHARS = 120


def _unchanged(text: str) -> str:
    return text


def span_bounds(text: str, span: str | None) -> tuple[int, int] | None:
    """[start, end) of the first occurrence of `span` in `text`; None when there is no span
    or `text` does not contain it."""
    if not span or not span.strip():
        return None
    start = text.find(span)
    return None if start < 0 else (start, start + len(span))


def mark_span(
    text: str,
    span: str | None,
    before: str,
    after: str,
    escape: Callable[[str], str] = _unchanged,
) -> str:
    """`text` with `span` wrapped in `before` / `after`, every piece of `text` passed through
    `escape` (e.g. `html.escape`; the markers are not). `text` comes back only escaped when
    it does not contain `span`."""
    bounds = span_bounds(text, span)
    if bounds is None:
        return escape(text)
    start, end = bounds
    return escape(text[:start]) + before + escape(text[start:end]) + after + escape(text[end:])


def confidence_text(confidence: float, label: str | None = None) -> str:
    """What users read next to an answer: "置信度：高（0.93）". `label` defaults to the QA
    layer's label of `confidence`; pass the one an `Answer.to_dict()` carries to show it as
    sent."""
    label = label or confidence_label(confidence)
    return f"置信度：{label}（{float(confidence):.2f}）"


@lru_cache(maxsize=4)
def example_questions(path: Path = EXAMPLES_PATH) -> tuple[str, ...]:
    """The example questions shown to users, from the JSON file at `path`: an object whose
    "questions" is a list of strings, in the order to show them. A missing or malformed
    file gives no examples (logged as a warning), never an error."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        questions = data["questions"]
        if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
            raise ValueError('"questions" must be a list of strings')
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        logger.warning("no example questions: cannot read %s (%s)", path, error)
        return ()
    return tuple(question.strip() for question in questions if question.strip())


# --- shared pieces ------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"[。！？；!?;…]+[”’」』）)]*|\n+")
# HTML's own characters, and those Markdown or the page's math rendering give a meaning, as
# character references: the browser shows them as themselves, and Markdown never reads a
# reference as syntax.
_LITERAL = str.maketrans({
    **{char: f"&#{ord(char)};" for char in "\\`*_[]()#+-!|~$:{}=^"},
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;",
})


# The characters CommonMark's inline syntax (and the math of many chat clients) reads,
# backslash-escaped: every Markdown renderer then shows them as themselves.
_MARKDOWN_SYNTAX = re.compile(r"([\\`*_\[\]<>~|$#&])")


def literal_markdown(text: str) -> str:
    """`text` as Markdown that shows exactly `text` (document text in the openai channel)."""
    return _MARKDOWN_SYNTAX.sub(r"\\\1", text)


def literal_html(text: str) -> str:
    """`text` as HTML that shows exactly `text` wherever it lands in a Markdown message."""
    return text.translate(_LITERAL)


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def cut_at_sentence(text: str, max_bytes: int, *, ellipsis: str = "……") -> str:
    """`text` unchanged if it fits in `max_bytes` of UTF-8; otherwise its longest prefix
    ending at a sentence end (。！？； or a line break) that fits. With no sentence end in
    reach, the longest prefix of whole characters that fits, followed by `ellipsis`."""
    if utf8_len(text) <= max_bytes:
        return text
    fitting = text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
    ends = [match.end() for match in _SENTENCE_END.finditer(fitting)]
    if ends and ends[-1] > 0:
        return fitting[: ends[-1]].rstrip()
    room = max(0, max_bytes - utf8_len(ellipsis))
    return text.encode("utf-8")[:room].decode("utf-8", errors="ignore") + ellipsis


def book_title(title: str) -> str:
    """`title` in 《》, its own 《》 turned into 〈〉 as Chinese nests book-title marks."""
    return "《" + title.replace("《", "〈").replace("》", "〉") + "》"


def highlight(text: str, spans: Sequence[Sequence[int]]) -> str:
    """`text` as literal HTML (`literal_html`), with each [start, end) span in <mark>."""
    pieces = []
    position = 0
    for start, end in sorted((int(s), int(e)) for s, e in spans):
        start, end = max(start, position), min(end, len(text))
        if start >= end:
            continue
        pieces.append(literal_html(text[position:start]))
        pieces.append(f"<mark>{literal_html(text[start:end])}</mark>")
        position = end
    pieces.append(literal_html(text[position:]))
    return "".join(pieces).replace("\n", "<br>")


def _confidence(answer: Mapping[str, Any]) -> str:
    return confidence_text(answer.get("confidence", 0.0), answer.get("confidence_label"))


def _sources(answer: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """What an answer shows as its sources: its citations, or for a refusal the closest
    passages."""
    if answer.get("answered"):
        return list(answer.get("citations") or ())
    return list(answer.get("passages") or ())[:REFUSAL_PASSAGES]


def _note(citation: Mapping[str, Any]) -> str:
    return f"（{citation['note']}）" if citation.get("note") else ""


# --- the channels -------------------------------------------------------------------------------


def _understood_as(answer: Mapping[str, Any], question: str) -> str:
    """The rewritten question of a follow-up, or "" when it was read as asked."""
    understood = (answer.get("understood_as") or answer.get("query") or "").strip()
    return understood if question and understood and understood != question.strip() else ""


def _text(answer: Mapping[str, Any], question: str, marks: tuple[str, str] | None, max_bytes: int) -> str:
    if answer.get("answered"):
        lines = [mark_span(answer["answer"], answer.get("span"), *(marks or PLAIN_MARKS)),
                 _confidence(answer)]
    else:
        lines = [answer.get("answer", "")]
    notice = answer.get("notice")
    if notice and notice != answer.get("answer"):
        lines.insert(0, f"（{notice}）")
    understood = _understood_as(answer, question)
    if understood:
        lines.insert(0, f"（按上下文理解为：{understood}）")
    sources = _sources(answer)
    if sources:
        lines += ["", "来源：" if answer.get("answered") else "最接近的段落："]
    for number, citation in enumerate(sources, start=1):
        lines.append(f"[{number}] {book_title(citation['title'])} {citation['section']}"
                     f"{_note(citation)}  ({citation['source_file']})")
        if not answer.get("answered"):
            lines.append(f"    {citation['quote'][:TERMINAL_PREVIEW_CHARS]}…")
    return "\n".join(lines)


def _source_item(citation: Mapping[str, Any], preview_chars: int | None) -> str:
    quote = citation.get("quote", "")
    if preview_chars is not None and len(quote) > preview_chars:
        quote_html = highlight(quote[:preview_chars], ()) + "…"
    else:
        quote_html = highlight(quote, citation.get("highlights") or ())
    note = citation.get("note")
    note_html = f' <span class="pqa-note">（{literal_html(note)}）</span>' if note else ""
    section = citation.get("section") or ""
    section_html = f' · <span class="pqa-section">{literal_html(section)}</span>' if section else ""
    return (
        f'<li><span class="pqa-source-title">{literal_html(book_title(citation.get("title", "")))}</span>'
        f"{section_html}{note_html}"
        f'<div class="pqa-quote">{quote_html}</div></li>'
    )


def _markdown(answer: Mapping[str, Any], question: str, marks: tuple[str, str] | None, max_bytes: int) -> str:
    parts = []
    notice = answer.get("notice")
    if notice and notice != answer.get("answer"):
        parts.append(f'<div class="pqa-meta">{literal_html(notice)}</div>')
    if answer.get("answered"):
        marked = mark_span(answer.get("answer", ""), answer.get("span"), *(marks or HTML_MARKS),
                           literal_html)
        parts.append(f'<div>{marked.replace(chr(10), "<br>")}</div>')
        parts.append(f'<div class="pqa-confidence">{literal_html(_confidence(answer))}</div>')
        heading, preview = "来源", None
    else:
        refusal = literal_html(answer.get("answer", "")).replace("\n", "<br>")
        parts.append(f'<div class="pqa-refused"><strong>{REFUSAL_TITLE}</strong><br>{refusal}</div>')
        heading, preview = "最接近的段落（仅供参考）", PASSAGE_PREVIEW_CHARS
    understood = _understood_as(answer, question)
    if understood:
        parts.append(f'<div class="pqa-meta">按上下文理解为：{literal_html(understood)}</div>')
    sources = _sources(answer)
    if sources:
        items = "".join(_source_item(citation, preview) for citation in sources)
        parts.append(f'<div><strong>{heading}</strong></div><ol class="pqa-sources">{items}</ol>')
    return f'<div class="pqa-answer">{"".join(parts)}</div>'


def _wechat_labels(answer: Mapping[str, Any]) -> list[str]:
    """One "《title》section（note）" label per distinct cited section, in citation order."""
    labels: list[str] = []
    for citation in answer.get("citations") or ():
        label = book_title(citation["title"]) + (citation.get("section") or "") + _note(citation)
        if label not in labels:
            labels.append(label)
    return labels


def _wechat(answer: Mapping[str, Any], question: str, marks: tuple[str, str] | None, max_bytes: int) -> str:
    """The answer cut at a sentence end so that the confidence line and the sources still
    fit in `max_bytes`; a span the cut reaches is left unmarked."""
    answered = bool(answer.get("answered"))
    text = answer.get("answer") or ("" if answered else REFUSAL_TEXT)
    notice = answer.get("notice") or ""
    prefix = f"{notice}\n" if notice and notice not in text else ""
    span = (answer.get("span") or "") if answered else ""
    before, after = marks or PLAIN_MARKS
    marks_bytes = utf8_len(before + after) if span and span in text else 0
    confidence = "\n" + _confidence(answer) if answered else ""
    labels = _wechat_labels(answer) if answered else []
    while True:
        sources = ("\n\n出处：\n" + "\n".join(labels)) if labels else ""
        room = max_bytes - utf8_len(confidence + sources)
        # Keep the sources only while they leave the answer a reasonable share of the room.
        if not labels or room >= max_bytes // 2:
            break
        labels.pop()
    body = cut_at_sentence(prefix + text, room - marks_bytes)
    if body.startswith(prefix):  # the span is looked for in the answer, not in the notice
        body = prefix + mark_span(body[len(prefix):], span, before, after)
    return body + confidence + sources


def _openai(answer: Mapping[str, Any], question: str, marks: tuple[str, str] | None, max_bytes: int) -> str:
    answered = bool(answer.get("answered"))
    body = answer.get("answer") or ("" if answered else REFUSAL_TEXT)
    if answered:
        body = mark_span(body, answer.get("span"), *(marks or MARKDOWN_MARKS), literal_markdown)
        body += "\n" + _confidence(answer)
    else:
        body = literal_markdown(body)
    notice = answer.get("notice")
    if notice and notice not in answer.get("answer", ""):
        body = f"{literal_markdown(notice)}\n{body}"
    lines = [
        literal_markdown(f"{book_title(citation['title'])} {citation['section']}".rstrip() + _note(citation))
        for citation in (answer.get("citations") or () if answered else ())
    ]
    lines = [f"[{number}] {line}" for number, line in enumerate(lines, start=1)]
    return body + ("\n\n" + "\n".join(lines) if lines else "")


_CHANNELS: dict[str, Callable[[Mapping[str, Any], str, tuple[str, str] | None, int], str]] = {
    "text": _text,
    "markdown": _markdown,
    "wechat": _wechat,
    "openai": _openai,
}


def render(
    answer: Answer | Mapping[str, Any],
    channel: Channel,
    *,
    question: str | None = None,
    marks: tuple[str, str] | None = None,
    max_bytes: int = WECHAT_TEXT_LIMIT_BYTES,
) -> str:
    """`answer` (an `Answer`, or its `to_dict()` as the API sends it) as `channel` shows it.

    `question` is what the user typed (an `Answer` knows it): when the searched query
    differs (a follow-up), text and markdown say what was searched. `marks` replace the
    channel's span markers (the CLI passes `TERMINAL_BOLD` on a terminal). `max_bytes` is
    the wechat channel's limit.

    :raises ValueError: for an unknown channel.
    """
    if channel not in _CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; one of {', '.join(_CHANNELS)}")
    if isinstance(answer, Answer):
        question = answer.question if question is None else question
        answer = answer.to_dict()
    return _CHANNELS[channel](answer, question or "", marks, max_bytes)
