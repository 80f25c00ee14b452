"""The seed eval set: its schema, loading, writing and a checker against the raw documents.

The set lives in `eval/data/seed_qa.jsonl`, one JSON object per line (see
`eval/data/README.md`). This module reads the source text files directly and imports
nothing from the other layers, so the gold data is checked against the documents as they
are on disk, not against what our own cleaning makes of them.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "seed_qa.jsonl"
DEFAULT_CORPUS_DIR = Path(__file__).resolve().parent.parent / "corpus" / "documents"

SPLITS = ("dev", "test")
TYPES = (
    "number",
    "entity",
    "list",
    "goal",
    "definition",
    "date",
    "unanswerable",
    "followup",
    "multi",
)
STYLES = ("user", "document")
SECTION_SEPARATOR = " > "

# doc_id -> source file. File 003 carries three logical documents (the cover notice and the
# two attachments), so three ids share one file; PART_MARKERS says where each part begins.
SOURCE_FILES = {
    "000": "000_e6ff10c744180c7f.txt",
    "001": "001_bfabfcb7a022c977.txt",
    "002": "002_71f1d4b84a3cbccc.txt",
    "003-0": "003_acd3c122fbf1e800.txt",
    "003-1": "003_acd3c122fbf1e800.txt",
    "003-2": "003_acd3c122fbf1e800.txt",
    "004": "004_119ef5987426d027.txt",
}
# Each attachment opens with its title followed by its date line; the title alone also
# occurs inside the notice, so the date is part of the marker.
PART_MARKERS = {
    "003-1": "虹桥国际中央商务区产业发展规划2022年8月",
    "003-2": "虹桥国际中央商务区重点产业目录2022年8月",
}
PART_ORDER = ("003-0", "003-1", "003-2")
# Text outside every heading (a preamble, an abstract, the whole cover notice) cites the
# document's title, as written in the file, as its section.
DOC_TITLES = {
    "000": "加快建设虹桥国际贸易中心新平台的对策建议",
    "001": "虹桥国际开放枢纽建设总体方案",
    "002": "上海市人民政府关于印发《“十四五”时期提升上海国际贸易中心能级规划》的通知",
    "003-0": "关于发布并实施《虹桥国际中央商务区产业发展规划》 和《虹桥国际中央商务区重点产业目录》的通知",
    "003-1": "虹桥国际中央商务区 产业发展规划",
    "003-2": "虹桥国际中央商务区 重点产业目录",
    "004": "依托进博会和临港新片区两大平台 强化上海开放枢纽门户功能",
}

MAX_QUOTE_CHARS = 120
MAX_KEYWORD_CHARS = 20
KEYWORDS_PER_ITEM = (2, 4)
ID_PATTERN = re.compile(r"^q\d{4}$")
# Markdown emphasis and heading marks sit inside some headings of the raw files
# ("1. **高能级总部经济**"); they are ignored when a section path is matched, never in quotes.
HEADING_MARKUP = re.compile(r"[*#]")
# Numbered headings open their own line; their numbering says their level. A section
# ends at the next heading line of its own level or a higher one. Levels, highest first:
# "一、建设背景" or "### 三 “十四五”…", "（四）构建…", "1. 贸易集聚…", "(1) 服务贸易…".
HEADING_LEVELS = (
    re.compile(r"[一二三四五六七八九十]+(、|\s)"),
    re.compile(r"[(（][一二三四五六七八九十]+[)）]"),
    re.compile(r"\d+[.．、]"),
    re.compile(r"[(（]\d+[)）]"),
)


def heading_level(line: str) -> int | None:
    """0 for a top-level heading line, 1, 2, 3 for deeper ones, None for other text."""
    bare = line.lstrip(" \t\u3000#*")
    return next((level for level, p in enumerate(HEADING_LEVELS) if p.match(bare)), None)


@dataclass(frozen=True)
class Evidence:
    """A passage that supports the gold answer: an exact quote from one section."""

    doc_id: str
    source_file: str
    section: str
    quote: str

    def to_dict(self) -> dict:
        return {
            "doc_id": self.doc_id,
            "source_file": self.source_file,
            "section": self.section,
            "quote": self.quote,
        }


@dataclass(frozen=True)
class EvalItem:
    """One question with its gold answer. `history` holds earlier user turns (follow-ups)."""

    id: str
    split: str
    type: str
    style: str
    question: str
    history: tuple[str, ...]
    answerable: bool
    answer: str
    keywords: tuple[str, ...]
    evidence: tuple[Evidence, ...]

    @classmethod
    def from_dict(cls, data: dict) -> "EvalItem":
        """Build an item from its JSON object.

        :raises ValueError: when a field is missing or has the wrong JSON type.
        """
        if not isinstance(data, dict):
            raise ValueError("an item must be a JSON object")
        expected = {
            "id": str,
            "split": str,
            "type": str,
            "style": str,
            "question": str,
            "history": list,
            "answerable": bool,
            "answer": str,
            "keywords": list,
            "evidence": list,
        }
        for name, kind in expected.items():
            if name not in data:
                raise ValueError(f"missing field {name!r}")
            if not isinstance(data[name], kind):
                raise ValueError(f"field {name!r} must be {kind.__name__}")
        unknown = sorted(set(data) - set(expected))
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}")
        for name in ("history", "keywords"):
            if not all(isinstance(value, str) for value in data[name]):
                raise ValueError(f"field {name!r} must be a list of strings")
        evidence = []
        for entry in data["evidence"]:
            if not isinstance(entry, dict):
                raise ValueError("each evidence entry must be an object")
            fields = ("doc_id", "source_file", "section", "quote")
            if set(entry) != set(fields) or not all(isinstance(entry[f], str) for f in fields):
                raise ValueError(f"each evidence entry needs exactly the string fields {fields}")
            evidence.append(Evidence(**{f: entry[f] for f in fields}))
        return cls(
            id=data["id"],
            split=data["split"],
            type=data["type"],
            style=data["style"],
            question=data["question"],
            history=tuple(data["history"]),
            answerable=data["answerable"],
            answer=data["answer"],
            keywords=tuple(data["keywords"]),
            evidence=tuple(evidence),
        )

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "split": self.split,
            "type": self.type,
            "style": self.style,
            "question": self.question,
            "history": list(self.history),
            "answerable": self.answerable,
            "answer": self.answer,
            "keywords": list(self.keywords),
            "evidence": [e.to_dict() for e in self.evidence],
        }


def fold(text: str) -> str:
    """Text as the checker compares it: NFKC per character (full-width to half-width) and
    every whitespace character removed, because the source files break lines mid-sentence."""
    folded = (unicodedata.normalize("NFKC", ch) for ch in text)
    return "".join(ch for piece in folded for ch in piece if not ch.isspace())


def load_items(path: Path | str = DEFAULT_PATH, split: str | None = None) -> list[EvalItem]:
    """Read the items of a JSONL file, optionally only one split.

    :raises ValueError: on an unknown split, or a line that is not a valid item (the
        message names the line).
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    items = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = EvalItem.from_dict(json.loads(line))
            except (json.JSONDecodeError, ValueError) as error:
                raise ValueError(f"{path}:{line_number}: {error}") from error
            if split is None or item.split == split:
                items.append(item)
    return items


def write_items(items: Iterable[EvalItem], path: Path | str) -> None:
    """Write items as UTF-8 JSONL (one object per line, Chinese unescaped).

    The file is written to a temporary sibling and then renamed over `path`, so a crash
    mid-write never leaves a truncated eval set behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            for item in items:
                handle.write(json.dumps(item.to_dict(), ensure_ascii=False) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class _FoldedDocument:
    text: str
    headings: tuple[tuple[int, int], ...]  # (offset in `text`, level) of each heading line

    def section_end(self, body_start: int, level: int) -> int:
        """Where a section of `level` whose body starts at `body_start` ends."""
        return next(
            (start for start, lvl in self.headings if start >= body_start and lvl <= level),
            len(self.text),
        )


class _FoldedCorpus:
    """Folded text of each logical document, read once per check."""

    def __init__(self, corpus_dir: Path):
        self.corpus_dir = corpus_dir
        self._documents: dict[str, _FoldedDocument | None] = {}

    def text(self, doc_id: str) -> str | None:
        """Folded text of `doc_id` (its own part of a shared file), None when unreadable."""
        document = self.document(doc_id)
        return document.text if document else None

    def document(self, doc_id: str) -> _FoldedDocument | None:
        if doc_id not in self._documents:
            self._documents[doc_id] = self._read(doc_id)
        return self._documents[doc_id]

    def _read(self, doc_id: str) -> _FoldedDocument | None:
        path = self.corpus_dir / SOURCE_FILES[doc_id]
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return None
        pieces, headings, length = [], [], 0
        for line in lines:
            level = heading_level(line)
            if level is not None:
                headings.append((length, level))
            piece = fold(line)
            pieces.append(piece)
            length += len(piece)
        whole = "".join(pieces)
        start, end = 0, len(whole)
        if doc_id in PART_ORDER:
            starts = [0] + [whole.find(PART_MARKERS[part]) for part in PART_ORDER[1:]]
            if min(starts) < 0:
                return None
            position = PART_ORDER.index(doc_id)
            start = starts[position]
            end = starts[position + 1] if position + 1 < len(starts) else len(whole)
        return _FoldedDocument(
            text=whole[start:end],
            headings=tuple((h - start, lvl) for h, lvl in headings if start <= h < end),
        )


def _section_start(text: str, section: str) -> int:
    """Where the body of `section` begins in folded `text`, or -1 when its headings are not
    there in order. The top heading is taken at its last occurrence, so a table of contents
    listing it first is skipped."""
    bare = HEADING_MARKUP.sub("", text)
    parts = [HEADING_MARKUP.sub("", fold(p)) for p in section.split(SECTION_SEPARATOR)]
    position = bare.rfind(parts[0])
    if position < 0:
        return -1
    position += len(parts[0])
    for part in parts[1:]:
        found = bare.find(part, position)
        if found < 0:
            return -1
        position = found + len(part)
    # Map back from the markup-free text to `text`, counting the characters kept.
    kept = 0
    for index, ch in enumerate(text):
        if kept == position:
            return index
        if not HEADING_MARKUP.match(ch):
            kept += 1
    return len(text)


def _check_evidence(item: EvalItem, corpus: _FoldedCorpus) -> list[str]:
    problems = []
    for number, evidence in enumerate(item.evidence, start=1):
        where = f"{item.id}: evidence {number}"
        if evidence.doc_id not in SOURCE_FILES:
            problems.append(f"{where}: unknown doc_id {evidence.doc_id!r}")
            continue
        expected_file = SOURCE_FILES[evidence.doc_id]
        if evidence.source_file != expected_file:
            problems.append(
                f"{where}: source_file {evidence.source_file!r} is not the file of "
                f"doc {evidence.doc_id} ({expected_file})"
            )
            continue
        document = corpus.document(evidence.doc_id)
        if document is None:
            problems.append(f"{where}: cannot read {expected_file} in {corpus.corpus_dir}")
            continue
        text = document.text
        quote = fold(evidence.quote)
        if not quote:
            problems.append(f"{where}: empty quote")
            continue
        if len(evidence.quote) > MAX_QUOTE_CHARS:
            problems.append(
                f"{where}: quote is {len(evidence.quote)} characters (at most {MAX_QUOTE_CHARS})"
            )
        if not evidence.section.strip():
            problems.append(f"{where}: empty section")
            continue
        quote_at = text.find(quote)
        if quote_at < 0:
            problems.append(
                f"{where}: quote not found in doc {evidence.doc_id}: {evidence.quote[:40]!r}"
            )
            continue
        if fold(evidence.section) == fold(DOC_TITLES[evidence.doc_id]):
            continue
        section_at = _section_start(text, evidence.section)
        if section_at < 0:
            problems.append(
                f"{where}: section headings not found in order: {evidence.section!r}"
            )
        else:
            last_heading = evidence.section.split(SECTION_SEPARATOR)[-1]
            level = heading_level(last_heading)
            end = document.section_end(section_at, 0 if level is None else level)
            found = text.find(quote, section_at)
            if found < 0 or found >= end:
                problems.append(f"{where}: quote is not under section {evidence.section!r}")
    return problems


def _check_item(item: EvalItem, corpus: _FoldedCorpus) -> list[str]:
    problems = []
    if not ID_PATTERN.match(item.id):
        problems.append(f"{item.id}: id must look like q0001")
    if item.split not in SPLITS:
        problems.append(f"{item.id}: bad split {item.split!r} (expected {SPLITS})")
    if item.type not in TYPES:
        problems.append(f"{item.id}: bad type {item.type!r} (expected one of {TYPES})")
    if item.style not in STYLES:
        problems.append(f"{item.id}: bad style {item.style!r} (expected {STYLES})")
    if not item.question.strip():
        problems.append(f"{item.id}: empty question")
    if not item.answer.strip():
        problems.append(f"{item.id}: empty answer")
    if any(not turn.strip() for turn in item.history):
        problems.append(f"{item.id}: empty turn in history")
    if item.type == "followup" and not item.history:
        problems.append(f"{item.id}: a followup needs the earlier question(s) in history")
    if item.history and item.type not in ("followup", "unanswerable"):
        problems.append(f"{item.id}: history is only for followup or unanswerable items")
    if (item.type == "unanswerable") == item.answerable:
        problems.append(f"{item.id}: type 'unanswerable' if and only if answerable is false")

    if not item.answerable:
        if item.keywords:
            problems.append(f"{item.id}: unanswerable item has keywords")
        if item.evidence:
            problems.append(f"{item.id}: unanswerable item has evidence")
        return problems

    if not item.evidence:
        problems.append(f"{item.id}: answerable item without evidence")
    if item.type == "multi" and len(item.evidence) < 2:
        problems.append(f"{item.id}: a multi item needs at least two evidence passages")
    low, high = KEYWORDS_PER_ITEM
    if not low <= len(item.keywords) <= high:
        problems.append(f"{item.id}: {len(item.keywords)} keywords (expected {low} to {high})")
    problems.extend(_check_evidence(item, corpus))

    quotes = [fold(e.quote) for e in item.evidence]
    sources = {
        corpus.text(e.doc_id) for e in item.evidence if e.doc_id in SOURCE_FILES
    } - {None}
    answer = fold(item.answer)
    for keyword in item.keywords:
        folded = fold(keyword)
        if not folded:
            problems.append(f"{item.id}: empty keyword")
            continue
        if len(folded) > MAX_KEYWORD_CHARS:
            problems.append(f"{item.id}: keyword {keyword!r} is longer than {MAX_KEYWORD_CHARS}")
        # With no readable document the evidence check has already said so.
        if sources and not any(folded in text for text in sources):
            problems.append(f"{item.id}: keyword {keyword!r} not found in the cited document(s)")
        elif sources and not any(folded in quote for quote in quotes):
            problems.append(f"{item.id}: keyword {keyword!r} is in no evidence quote")
        if folded not in answer:
            problems.append(f"{item.id}: keyword {keyword!r} is missing from the gold answer")
    return problems


def check_items(
    items: Iterable[EvalItem], corpus_dir: Path | str = DEFAULT_CORPUS_DIR
) -> list[str]:
    """Every problem found, one readable line each, starting with the item id.

    Quotes and keywords are compared after `fold` (NFKC, whitespace removed) with the raw
    source files; a keyword must also occur in an evidence quote and in the gold answer.
    An empty list means the set is sound.
    """
    corpus = _FoldedCorpus(Path(corpus_dir))
    problems: list[str] = []
    seen_ids: set[str] = set()
    seen_questions: dict[tuple[str, ...], str] = {}
    for item in items:
        if item.id in seen_ids:
            problems.append(f"{item.id}: duplicate id")
        seen_ids.add(item.id)
        key = tuple(fold(turn) for turn in (*item.history, item.question))
        if key in seen_questions:
            problems.append(f"{item.id}: same question as {seen_questions[key]}")
        else:
            seen_questions[key] = item.id
        problems.extend(_check_item(item, corpus))
    return problems


def summary(items: Iterable[EvalItem]) -> dict[str, dict[str, int]]:
    """Counts by split, type, style, split/type and cited doc (an item counts once for each
    doc it cites; unanswerable items count under "none")."""
    items = list(items)
    by_doc: Counter[str] = Counter()
    for item in items:
        docs = {e.doc_id for e in item.evidence} or {"none"}
        by_doc.update(docs)
    return {
        "total": {"items": len(items)},
        "split": dict(Counter(item.split for item in items)),
        "type": dict(Counter(item.type for item in items)),
        "style": dict(Counter(item.style for item in items)),
        "split_type": dict(Counter(f"{item.split}/{item.type}" for item in items)),
        "doc": dict(sorted(by_doc.items())),
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m eval.dataset [PATH]`: print the counts and every problem; exit 1 on any."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT_PATH
    try:
        items = load_items(path)
    except (OSError, ValueError) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary(items), ensure_ascii=False, indent=2))
    problems = check_items(items)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(items)} items, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
