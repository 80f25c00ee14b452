"""The section tree of a cleaned document.

Headings are recognised by their numbering (一、 / （一） / (一) / 1. / 1、 / （1） / ① /
第X章 / 第X节 / 第X条), by markdown "#" marks, and by a few fixed names (参考文献, 附件).
Levels come from the document itself: the first numbering style seen is level 1, the next
new one level 2, and so on, because documents disagree on what nests in what (000 puts
"1." under "(一)", 004 adds "(1)" below that). Markdown heading marks in 002 are uneven
("## (二) 发展目标" is a sibling of "### （一）指导思想"), so a markdown heading that carries
numbering is ranked by its numbering; only unnumbered markdown headings rank by "#" count.

A heading either fills its line ("一、建设背景") or runs into body text ("（一）指导思想。以
习近平..."); a run-in heading's title is its first sentence, without the full stop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from corpus.cleaning import CleanedText, Paragraph, is_named_heading, is_standalone_heading
from corpus.models import Section
from corpus.text import numbering_style

NAMED_STYLE = "named"
_RUN_IN_TITLE_CHARS = 48  # a first sentence longer than this is body text, not a title
_CLAUSE_TITLE_CHARS = 30
_SENTENCE_MARK = re.compile(r"[。！？]")
_CLAUSE_MARK = re.compile(r"[，；：,;:]")
_TRAILING_MARKS = " ：:；;，,。"
# Subtitle lines under a markdown title: a document number (沪府发〔2021〕2号) or a date.
_SUBTITLE = re.compile(
    r".*[〔\[(（［]\s*\d{4}\s*[〕\])）］]\s*\d+\s*号.*|.*\d{4}\s*年(\s*\d{1,2}\s*月(\s*\d{1,2}\s*日)?)?.{0,6}"
)


@dataclass(frozen=True)
class Heading:
    """A heading found in a paragraph: its title (a prefix of the paragraph) and style."""

    title_span: tuple[int, int]
    style: str
    paragraph_start: int


class SectionParser:
    """Finds the headings of a `CleanedText` and nests them into `Section`s."""

    def parse(self, cleaned: CleanedText) -> tuple[Section, ...]:
        """Sections in document order. Each span runs from its heading to the next heading
        of the same or a higher level (so it includes its subsections); text before the
        first heading belongs to no section."""
        headings = self.headings(cleaned)
        ranks = self._ranks([heading.style for heading in headings])
        text = cleaned.text
        sections = []
        stack: list[tuple[int, str]] = []  # (rank, title) of the open headings
        for index, heading in enumerate(headings):
            rank = ranks[heading.style]
            while stack and stack[-1][0] >= rank:
                stack.pop()
            title = text[heading.title_span[0] : heading.title_span[1]]
            stack.append((rank, title))
            end = len(text)
            for later in headings[index + 1 :]:
                if ranks[later.style] <= rank:
                    end = later.paragraph_start
                    break
            while end > heading.paragraph_start and text[end - 1].isspace():
                end -= 1
            path = tuple(open_title for _, open_title in stack)
            sections.append(Section(path=path, char_span=(heading.paragraph_start, end)))
        return tuple(sections)

    def headings(self, cleaned: CleanedText) -> list[Heading]:
        """The headings, in order; the title lines at the top are not headings."""
        paragraphs = cleaned.paragraphs
        first = self._title_block_length(cleaned)
        found = []
        for paragraph in paragraphs[first:]:
            heading = self._heading(cleaned, paragraph)
            if heading is not None:
                found.append(heading)
        return found

    # --- one paragraph -------------------------------------------------------------------------

    def _heading(self, cleaned: CleanedText, paragraph: Paragraph) -> Heading | None:
        if paragraph.is_table_row:
            return None
        start = paragraph.char_span[0]
        text = cleaned.paragraph_text(paragraph)
        if paragraph.markdown_level is not None:
            numbering = numbering_style(text, in_markdown_heading=True)
            style = numbering[0] if numbering else f"markdown{paragraph.markdown_level}"
            return Heading((start, start + len(text.rstrip(_TRAILING_MARKS))), style, start)
        if is_named_heading(text):
            return Heading((start, start + len(text.rstrip(_TRAILING_MARKS))), NAMED_STYLE, start)
        numbering = numbering_style(text)
        if numbering is None:
            return None
        return Heading((start, start + self._title_length(text)), numbering[0], start)

    @staticmethod
    def _title_length(text: str) -> int:
        """Length of the title at the start of a numbered paragraph."""
        if is_standalone_heading(text):
            return len(text.rstrip(_TRAILING_MARKS))
        sentence_end = _SENTENCE_MARK.search(text)
        if sentence_end and sentence_end.start() <= _RUN_IN_TITLE_CHARS:
            return len(text[: sentence_end.start()].rstrip(_TRAILING_MARKS))
        # No short first sentence ("(一) 培育外贸综合竞争新优势，构筑...战略，..."): the
        # title is the clauses that fit in a heading's length.
        clause_ends = [m.start() for m in _CLAUSE_MARK.finditer(text, 0, _CLAUSE_TITLE_CHARS)]
        if clause_ends:
            return len(text[: clause_ends[-1]].rstrip(_TRAILING_MARKS))
        return min(len(text), _CLAUSE_TITLE_CHARS)

    # --- the document ------------------------------------------------------------------------

    @staticmethod
    def _title_block_length(cleaned: CleanedText) -> int:
        """How many leading paragraphs are the document's title: a markdown heading at the
        very top and the document-number or date headings right under it."""
        paragraphs = cleaned.paragraphs
        if not paragraphs or paragraphs[0].markdown_level is None:
            return 0
        count = 1
        while count < len(paragraphs):
            paragraph = paragraphs[count]
            text = cleaned.paragraph_text(paragraph)
            if paragraph.markdown_level is None or numbering_style(text, True) is not None:
                break
            if not _SUBTITLE.fullmatch(text):
                break
            count += 1
        return count

    @staticmethod
    def _ranks(styles: list[str]) -> dict[str, int]:
        """Level rank of each style: order of first appearance, except that unnumbered
        markdown headings keep the order of their "#" counts among themselves, and named
        headings (参考文献) are always top level."""
        seen: list[str] = []
        for style in styles:
            if style not in seen and style != NAMED_STYLE:
                seen.append(style)
        markdown_slots = [i for i, style in enumerate(seen) if style.startswith("markdown")]
        markdown_styles = sorted(
            (seen[i] for i in markdown_slots), key=lambda style: int(style[len("markdown") :])
        )
        for slot, style in zip(markdown_slots, markdown_styles):
            seen[slot] = style
        ranks = {style: rank for rank, style in enumerate(seen)}
        ranks[NAMED_STYLE] = -1
        return ranks
