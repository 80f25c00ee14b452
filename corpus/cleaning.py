"""From extracted text to clean paragraphs.

The seed files are text pulled out of PDFs and web pages. Cleaning undoes what extraction
did to them and nothing else: it never rewrites a character users will be shown, it only
drops lines that are not content and joins lines that were one paragraph.

- page artefacts: page numbers, running headers and footers repeated on PDF pages, table
  rule rows ("--\t----");
- tables of contents ("一、发展基础\t3"), with their "目录" line;
- print notes of official documents (抄送 / ...印发 / (共印12份));
- markdown: heading marks (kept as `Paragraph.markdown_level`) and, in markdown text only,
  ** emphasis (`shows_markdown`): in a plain-text document a `**` is content and is kept;
- footnotes: superscript marks are dropped, and a footnote that extraction dropped into the
  middle of a paragraph at a page break (004's 作者简介 / 基金项目) is moved to just after
  the line that referred to it, so the paragraph it split is whole again;
- hard line breaks: a line that does not end a sentence is joined with the next (001 and
  000 break every line at a fixed width, the others at page breaks).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from corpus.text import (
    CONTINUATION_END,
    display_width,
    ends_sentence,
    fold,
    numbering_style,
)

SUPERSCRIPT_DIGITS = "¹²³⁴⁵⁶⁷⁸⁹⁰"
# Unnumbered headings that always open a top-level section.
NAMED_HEADINGS = ("参考文献", "附件", "附录", "注释", "后记")

_MARKDOWN_HEADING = re.compile(r"^(#{1,6})\s+")
_EMPHASIS = re.compile(r"\*\*")
# `**重点**` on one line: opened before, and closed after, text that is neither blank nor `*`.
_EMPHASIS_PAIR = re.compile(r"\*\*[^*\s](?:[^*\n]*[^*\s])?\*\*")
_PAGE_NUMBER = re.compile(
    r"[-—–\s]*\d{1,3}[-—–\s]*|第\s*\d+\s*页(\s*[,，/]?\s*共\s*\d+\s*页)?|\d{1,3}\s*/\s*\d{1,3}"
)
_RULE_ROW = re.compile(r"[-|:=\s]*-{2,}[-|:=\s]*")
_TOC_TITLE = re.compile(r"目\s*录")
_TOC_ENTRY = re.compile(r"(?P<title>\S.*?)(?:\t+|\s*[.．·…]{2,}\s*|\s{2,})(?P<page>\d{1,3})")
_PRINT_NOTES = (
    re.compile(r"(抄送|抄报)\s*[:：].*"),
    re.compile(r".*\d{4}\s*年\s*\d{1,2}\s*月\s*\d{1,2}\s*日\s*印发"),
    re.compile(r"[(（]\s*共印\s*\d+\s*份\s*[)）]"),
)
# A superscript after a letter or digit is a unit or power (万m², 10³), not a footnote mark.
_FOOTNOTE_MARK = re.compile(rf"(?<![A-Za-z0-9])[{SUPERSCRIPT_DIGITS}]+")
_FOOTNOTE_LABEL = re.compile(r"(基金项目|作者简介|收稿日期|通讯作者|项目基金)\s*[:：]")
_INNER_PUNCTUATION = "。！？，；,;"
# Hard-wrapped text: most lines are about as wide as the widest ones.
_WRAP_MIN_LINES = 10
_WRAP_MAX_WIDTH = 200
_WRAP_MEDIAN_RATIO = 0.85
_FULL_LINE_RATIO = 0.85
_STANDALONE_HEADING_CHARS = 60


@dataclass(frozen=True)
class Paragraph:
    """One paragraph of cleaned text: a heading line, a body paragraph or a table row."""

    char_span: tuple[int, int]
    markdown_level: int | None = None  # number of "#" when it was a markdown heading
    is_table_row: bool = False


@dataclass(frozen=True)
class CleanedText:
    """Cleaned document text (paragraphs joined by newlines) and its paragraphs."""

    text: str
    paragraphs: tuple[Paragraph, ...]

    def paragraph_text(self, paragraph: Paragraph) -> str:
        return self.text[paragraph.char_span[0] : paragraph.char_span[1]]


class _Line(NamedTuple):
    text: str
    markdown_level: int | None
    is_table_row: bool
    is_footnote: bool = False


def is_named_heading(text: str) -> bool:
    """"参考文献", "附件：" and the like: unnumbered headings of a top-level section."""
    return text.rstrip(":：").strip() in NAMED_HEADINGS


def is_standalone_heading(text: str) -> bool:
    """A numbered line with no sentence in it ("一、建设背景", "2. 缺乏有影响力的国际组织"),
    as opposed to a run-in heading that goes on with body text ("（一）指导思想。以...")."""
    return (
        numbering_style(text) is not None
        and len(text) <= _STANDALONE_HEADING_CHARS
        and not any(mark in text for mark in "。！？")
    )


def _is_parenthetical(text: str) -> bool:
    """A whole line in brackets, such as "（因原文篇幅过长，故节选会展相关内容展出）"."""
    return len(text) > 1 and text[0] in "(（[【" and text[-1] in ")）]】"


def shows_markdown(raw: str) -> bool:
    """Whether text of unknown kind (a .txt file) is markdown: it has a heading line
    (`## 标题`), or it has `**` and uses it only for emphasis pairs (`**重点**`, within one
    line). A `**` outside such a pair (`标注**的为必填项`, `2**10`) shows the text is plain,
    and keeps its `**` as written; so does the text of a document without any markdown."""
    lines = raw.splitlines()
    if any(_MARKDOWN_HEADING.match(line.strip()) for line in lines):
        return True
    if "**" not in raw:
        return False
    return all("**" not in _EMPHASIS_PAIR.sub("", line) for line in lines)


class Cleaner:
    """Turns the raw text of one document into `CleanedText`. Stateless; `clean` is pure."""

    def clean(self, raw: str, markdown: bool | None = None) -> CleanedText:
        """`markdown` says whether `raw` is markdown, whose `**` emphasis marks are dropped
        (None: decided from the text, by `shows_markdown`). Heading marks ("## ") become
        `Paragraph.markdown_level` either way: the .docx reader writes them for Word's
        heading styles."""
        if markdown is None:
            markdown = shows_markdown(raw)
        lines = self._lines(raw, markdown)
        lines = self._drop_table_of_contents(lines)
        lines = [line for line in lines if not self._is_artefact(line)]
        lines = self._move_footnotes(lines)
        return self._assemble(self._join(lines))

    # --- lines -----------------------------------------------------------------------------

    def _lines(self, raw: str, markdown: bool) -> list[_Line]:
        raw = raw.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
        pages = raw.split("\f")
        repeated = self._running_lines(pages)
        lines = []
        for page in pages:
            page_lines = [line.strip() for line in page.split("\n")]
            page_lines = [line for line in page_lines if line]
            edges = set(range(min(2, len(page_lines)))) | {
                len(page_lines) - 1 - i for i in range(min(2, len(page_lines)))
            }
            for position, text in enumerate(page_lines):
                if position in edges and self._page_key(text) in repeated:
                    continue
                lines.append(self._parse_line(text, markdown))
        return [line for line in lines if line.text]

    @staticmethod
    def _parse_line(text: str, markdown: bool) -> _Line:
        level = None
        heading = _MARKDOWN_HEADING.match(text)
        if heading:
            level = len(heading.group(1))
            text = text[heading.end() :]
        if markdown:
            text = _EMPHASIS.sub("", text)
        text = text.strip()
        return _Line(text, level, level is None and "\t" in text)

    @staticmethod
    def _page_key(text: str) -> str:
        return re.sub(r"\d+", "#", fold(text))

    def _running_lines(self, pages: list[str]) -> set[str]:
        """Headers and footers: lines at the top or bottom of at least half of the pages
        (and of three or more), with page numbers ignored."""
        if len(pages) < 3:
            return set()
        counts: Counter[str] = Counter()
        for page in pages:
            page_lines = [line.strip() for line in page.split("\n") if line.strip()]
            counts.update({self._page_key(line) for line in page_lines[:2] + page_lines[-2:]})
        needed = max(3, math.ceil(len(pages) / 2))
        return {key for key, count in counts.items() if count >= needed}

    # --- what is not content -----------------------------------------------------------------

    @staticmethod
    def _drop_table_of_contents(lines: list[_Line]) -> list[_Line]:
        """Drops a "目录" line with the entries under it, and any other run of three or more
        numbered lines that end in a page number."""

        def is_entry(line: _Line) -> bool:
            return bool(_TOC_ENTRY.fullmatch(line.text))

        kept: list[_Line] = []
        index = 0
        while index < len(lines):
            line = lines[index]
            if _TOC_TITLE.fullmatch(line.text):
                end = index + 1
                while end < len(lines) and is_entry(lines[end]):
                    end += 1
                if end > index + 1:
                    index = end
                    continue
            if is_entry(line) and numbering_style(line.text) is not None:
                end = index
                while end < len(lines) and is_entry(lines[end]):
                    end += 1
                if end - index >= 3:
                    index = end
                    continue
            kept.append(line)
            index += 1
        return kept

    @staticmethod
    def _is_artefact(line: _Line) -> bool:
        text = line.text
        if _PAGE_NUMBER.fullmatch(text) or _RULE_ROW.fullmatch(text):
            return True
        return any(pattern.fullmatch(text) for pattern in _PRINT_NOTES)

    @staticmethod
    def _move_footnotes(lines: list[_Line]) -> list[_Line]:
        """Moves each footnote ("¹作者简介：..." and the 基金项目 lines after it) to just
        after the first line that carries its mark, then drops the marks."""
        blocks: dict[str, list[_Line]] = {}
        body: list[_Line] = []
        index = 0
        while index < len(lines):
            text = lines[index].text
            if text[0] in SUPERSCRIPT_DIGITS:
                mark = text[0]
                end = index + 1
                while end < len(lines) and _FOOTNOTE_LABEL.match(lines[end].text):
                    end += 1
                blocks.setdefault(mark, []).extend(
                    line._replace(is_footnote=True) for line in lines[index:end]
                )
                index = end
                continue
            body.append(lines[index])
            index += 1

        moved: list[_Line] = []
        for line in body:
            moved.append(line)
            for mark in [m for m in blocks if m in line.text]:
                moved.extend(blocks.pop(mark))
        for leftover in blocks.values():  # a footnote nobody refers to stays, at the end
            moved.extend(leftover)
        cleaned = [line._replace(text=_FOOTNOTE_MARK.sub("", line.text).strip()) for line in moved]
        return [line for line in cleaned if line.text]

    # --- joining broken lines ------------------------------------------------------------------

    def _join(self, lines: list[_Line]) -> list[_Line]:
        full_width = self._full_line_width(lines)
        joined: list[_Line] = []
        last_source_line = ""
        for line in lines:
            if joined and self._continues(joined[-1], last_source_line, line, full_width):
                previous = joined[-1]
                between_words = previous.text[-1].isascii() and previous.text[-1].isalnum() and (
                    line.text[0].isascii() and line.text[0].isalnum()
                )
                glue = " " if between_words else ""
                joined[-1] = previous._replace(text=previous.text + glue + line.text)
            else:
                joined.append(line)
            last_source_line = line.text
        return joined

    @staticmethod
    def _full_line_width(lines: list[_Line]) -> float | None:
        """For hard-wrapped text, the width from which a line counts as full (so it was
        broken by the wrap, not by the author); None when the text is not hard-wrapped."""
        widths = sorted(
            display_width(line.text)
            for line in lines
            if line.markdown_level is None and not line.is_table_row
        )
        if len(widths) < _WRAP_MIN_LINES:
            return None
        median = widths[len(widths) // 2]
        high = widths[int(0.9 * (len(widths) - 1))]
        if high > _WRAP_MAX_WIDTH or median < _WRAP_MEDIAN_RATIO * high:
            return None
        return _FULL_LINE_RATIO * high

    @staticmethod
    def _continues(
        paragraph: _Line, last_source_line: str, line: _Line, full_width: float | None
    ) -> bool:
        """Whether `line` carries on `paragraph` (joined so far, ending with the source
        line `last_source_line`)."""
        if paragraph.markdown_level is not None or line.markdown_level is not None:
            return False
        if paragraph.is_table_row or line.is_table_row:
            return False
        if paragraph.is_footnote != line.is_footnote:
            return False
        if numbering_style(line.text) is not None or is_named_heading(line.text):
            return False
        if line.text.startswith(("[", "【", "•", "●", "▪")):
            return False
        if is_standalone_heading(paragraph.text) or is_named_heading(paragraph.text):
            return False
        if full_width is not None and display_width(last_source_line) >= full_width:
            return True  # a full line of hard-wrapped text: the wrap broke it, not the author
        if ends_sentence(paragraph.text) or _is_parenthetical(paragraph.text):
            return False
        return paragraph.text[-1] in CONTINUATION_END or any(
            mark in paragraph.text for mark in _INNER_PUNCTUATION
        )

    # --- output --------------------------------------------------------------------------------

    @staticmethod
    def _assemble(lines: list[_Line]) -> CleanedText:
        paragraphs = []
        position = 0
        for line in lines:
            paragraphs.append(
                Paragraph((position, position + len(line.text)), line.markdown_level, line.is_table_row)
            )
            position += len(line.text) + 1
        return CleanedText("\n".join(line.text for line in lines), tuple(paragraphs))
