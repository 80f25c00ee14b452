"""Character-level helpers shared by cleaning, sectioning and chunking.

Everything here works on spans of the original string: folding keeps the length, sentence
splitting returns offsets, so what users are shown always keeps its original characters.
"""

from __future__ import annotations

import re
import unicodedata

from corpus.models import content_hash

# Sentence-final marks. A closing quote or bracket right after one belongs to the sentence.
SENTENCE_END = "。！？；!?;"
CLOSERS = "”’」』）)】〕》\"'"
# Marks after which a broken line certainly goes on (enumeration comma, comma, openers).
CONTINUATION_END = "，,、（(“‘「『《〔【"
# A line that ends with one of these (or a closer after one) ends a sentence or a lead-in.
LINE_END = SENTENCE_END + "：:.…"

_SENTENCE_PATTERN = re.compile(
    rf"[^{SENTENCE_END}\n]*(?:[{SENTENCE_END}]+[{re.escape(CLOSERS)}]*|\n|$)"
)
_CLAUSE_BREAK = re.compile(r"[，,、：:；;]")

# Heading numbering styles, matched on folded text (so "（一）" and "(一)" are one style).
# Order matters only where patterns overlap; each names the style that sets nesting levels.
_CN_NUMERAL = "一二三四五六七八九十百零〇两"
NUMBERING_STYLES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("chapter", re.compile(rf"第[{_CN_NUMERAL}\d]+章")),
    ("part", re.compile(rf"第[{_CN_NUMERAL}\d]+节")),
    ("article", re.compile(rf"第[{_CN_NUMERAL}\d]+条")),
    ("cn", re.compile(rf"[{_CN_NUMERAL}]+[、.](?!\d)")),
    ("cn_paren", re.compile(rf"\([{_CN_NUMERAL}]+\)")),
    ("arabic_dot", re.compile(r"\d{1,2}\.(?!\d)")),
    ("arabic_comma", re.compile(r"\d{1,2}、")),
    ("arabic_paren", re.compile(r"\(\d{1,2}\)")),
    ("circled", re.compile(r"[\u2460-\u2473]")),
)
# Markdown headings in the seeds also number "一 标题" with a space instead of "、".
_CN_SPACE = re.compile(rf"[{_CN_NUMERAL}]+\s+(?=\S)")


class _FoldTable(dict):
    """str.translate table computed on first use of each character: NFKC when it maps the
    character to exactly one other character, the character itself otherwise."""

    def __missing__(self, codepoint: int) -> int:
        folded = unicodedata.normalize("NFKC", chr(codepoint))
        value = ord(folded) if len(folded) == 1 else codepoint
        self[codepoint] = value
        return value


_FOLD_TABLE = _FoldTable()


def fold(text: str) -> str:
    """Full-/half-width and compatibility folding for matching: "（一）" -> "(一)",
    "ＲＣＥＰ" -> "RCEP", "１．" -> "1.", ideographic space -> space.

    The result has exactly the length of `text` (character by character), so a span found
    in the folded text is the same span in the original. Characters whose compatibility
    form is longer than one character ("…" -> "...") are left as they are.
    """
    return text.translate(_FOLD_TABLE)


def numbering_style(text: str, in_markdown_heading: bool = False) -> tuple[str, int] | None:
    """The heading numbering that `text` starts with, as (style, end of the marker), e.g.
    ("cn_paren", 3) for "（一）指导思想". None when it starts with none.

    "2020年" and "1.5亿" are not numbering. "一 标题" (numeral and a space) counts only
    inside a markdown heading, where the seeds use it; in running text it is too risky.
    """
    folded = fold(text[:12])
    for style, pattern in NUMBERING_STYLES:
        match = pattern.match(folded)
        if match:
            return style, match.end()
    if in_markdown_heading:
        match = _CN_SPACE.match(folded)
        if match:
            return "cn", match.end()
    return None


def display_width(text: str) -> int:
    """Columns the text takes in a fixed-width layout: wide (CJK) characters count two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def ends_sentence(line: str) -> bool:
    """Whether the line ends with a sentence-final or lead-in mark (closers skipped)."""
    stripped = line.rstrip(CLOSERS + " ")
    return bool(stripped) and stripped[-1] in LINE_END


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Spans of the sentences of `text[start:end]`, in `text` offsets.

    A sentence ends at 。！？；(and their half-width forms, with any closing quotes or
    brackets after them) or at a line end, so list items and table rows are units too.
    Spans exclude surrounding whitespace; empty pieces are dropped.
    """
    end = len(text) if end is None else end
    spans = []
    for match in _SENTENCE_PATTERN.finditer(text, start, end):
        left, right = match.start(), match.end()
        while left < right and text[left].isspace():
            left += 1
        while right > left and text[right - 1].isspace():
            right -= 1
        if right > left:
            spans.append((left, right))
    return spans


def split_long_span(text: str, span: tuple[int, int], limit: int) -> list[tuple[int, int]]:
    """Cuts one over-long sentence into pieces of at most `limit` characters, at clause
    marks (，、：；) where it can and hard at `limit` where it cannot."""
    start, end = span
    pieces = []
    while end - start > limit:
        cut = None
        for match in _CLAUSE_BREAK.finditer(text, start, start + limit):
            cut = match.end()
        if cut is None:
            cut = start + limit
        pieces.append((start, cut))
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if end > start:
        pieces.append((start, end))
    return pieces


def slugify(stem: str) -> str:
    """A URL-safe id ([A-Za-z0-9_-]) for a file stem. Stems that are already safe are kept;
    others keep their safe characters plus a short hash of the stem, so two Chinese file
    names never collide on an empty or shared slug."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", stem):
        return stem
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-")
    digest = content_hash(stem, length=8)
    return f"{safe}-{digest}" if safe else f"doc-{digest}"
