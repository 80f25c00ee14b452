"""Extractive answers built around the reader's span.

The reader reads the top fused passages and gives, in each, its best answer span and the
probability that the passage answers. The answer is built around the most probable span:
- the span itself (`Extract.span`, highlighted where it is quoted);
- the sentence or sentences of its passage that contain it, quoted verbatim;
- for a 哪些 question, the whole enumeration the span belongs to (the items of its list in
  the passage, or the headings of the numbered sub-sections it is one of), and a table row
  whole;
- another passage's sentence when the reader is nearly as sure of it
  (`second_passage_ratio`): some answers are spread over two passages.
A compound question ("…是哪个单位发的？文号多少？") is read part by part.

The refusal decision belongs to the assistant: it compares `Extract.confidence` with the
threshold tuned on the dev split.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from corpus.models import Chunk
from index.models import Hit
from qa.question import QuestionKind, classify
from qa.reader import Reader, Reading, below_head, reading_head

_ENUMERATION_START = re.compile(
    r"^\s*(?:[二三四五六七八九十]+是|其[二三四五六七八九十]|第[二三四五六七八九十]|"
    r"[（(][二三四五六七八九十\d]+[）)]|\d+[.、．]|[②③④⑤⑥⑦⑧⑨⑩]|[-•·])"
)
_FIRST_ITEM = re.compile(r"^\s*(?:一是|其一|第一|[（(][一1][）)]|1[.、．]|①)")
_HEADING_START = re.compile(r"^\s*(?:[一二三四五六七八九十]+、|[（(][一二三四五六七八九十\d]+[）)]|\d+[.、．])")
_CJK = re.compile(r"[\u4e00-\u9fff]")
_YEAR = re.compile(r"(?:19|20)\d{2}(?=年)")
_NAME_TAGS = {"ns", "nr", "nrt", "nt", "nz"}  # jieba's place, person, organisation, other-name tags
_QUESTION_WORD = re.compile(r"哪|什么|多少|几|怎么|如何|是否|吗")
MAX_SIBLING_HEADINGS = 8  # a longer run of sub-sections is an outline, not a list answer
_MAX_ANSWER_CHARS = 260
_MAX_LIST_ANSWER_CHARS = 600


@dataclass(frozen=True)
class QuotedSentence:
    hit_rank: int  # 0-based rank of the chunk in the fused list
    chunk: Chunk
    sentence_index: int
    span: tuple[int, int]  # relative to chunk.text

    @property
    def text(self) -> str:
        return self.chunk.text[self.span[0] : self.span[1]]

    def sibling(self, sentence_index: int) -> "QuotedSentence":
        return QuotedSentence(self.hit_rank, self.chunk, sentence_index, self.chunk.sentences[sentence_index])


@dataclass(frozen=True)
class SpanLocation:
    """Where the answer span sits: [start, end) in the text of chunk `chunk_id`."""

    chunk_id: str
    start: int
    end: int


@dataclass(frozen=True)
class Extract:
    """The answer step's result: quoted sentences in answer order, the span and its place,
    and the reader's probability that the best passage answers."""

    sentences: tuple[QuotedSentence, ...]
    confidence: float
    span: str | None
    spans: tuple[SpanLocation, ...]
    kind: QuestionKind
    readings: tuple[Reading, ...] = ()
    # What the question names that the evidence lacks (a year, an unknown place): refused.
    missing: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        parts: list[str] = []
        previous: QuotedSentence | None = None
        for sentence in self.sentences:
            adjacent = (
                previous is not None
                and previous.chunk.chunk_id == sentence.chunk.chunk_id
                and previous.span[1] == sentence.span[0]
            )
            if parts and not adjacent:
                parts.append("\n")
            parts.append(sentence.text.strip() if not adjacent else sentence.text.rstrip())
            previous = sentence
        return "".join(parts).strip()


@dataclass(frozen=True)
class AnswerRules:
    """The few rules kept around the reader; each can be switched off for the ablation."""

    list_enumeration: bool = True
    table_rows: bool = True
    compound_questions: bool = True
    second_passage_ratio: float = 0.7  # 0 turns the second passage off
    # When the top passage alone reaches this probability, the others are not read
    # (latency); 0 reads them all.
    early_exit: float = 0.0
    # A year the question names must be in the answering passage, its section heading or
    # its table's header row.
    year_check: bool = True
    # A place, person or organisation the question names that no document mentions.
    unknown_names: bool = True
    # The reader sees each passage under its document's title, so a passage that says only
    # "商务区" is still about the 虹桥国际中央商务区 the question names. (The section path as
    # well read no better on dev and made answers 40% slower.)
    passage_titles: bool = True


class Answerer:
    """Reads the top `read_passages` hits with `reader` and quotes the answer."""

    def __init__(
        self,
        reader: Reader,
        chunks: Sequence[Chunk],
        read_passages: int = 4,
        max_sentences: int = 3,
        rules: AnswerRules = AnswerRules(),
    ):
        self.reader = reader
        self.read_passages = read_passages
        self.max_sentences = max_sentences
        self.rules = rules
        # The chunks that open a section with its heading line, grouped by parent section,
        # in document order: the items of a list made of sub-sections ((1)… (2)…).
        self._sections_under: dict[tuple[str, tuple[str, ...]], list[Chunk]] = {}
        # everything the documents say, once, for "does any document name this place?"
        self._corpus_text = _compact("".join(chunk.text for chunk in chunks))
        for chunk in chunks:
            if _heading_span(chunk) is not None:
                key = (chunk.doc_id, chunk.section_path[:-1])
                self._sections_under.setdefault(key, []).append(chunk)

    def extract(self, question: str, query: str, hits: Sequence[Hit]) -> Extract:
        """The answer to `query` (the question resolved against the conversation) from
        `hits`; `question` is the user's own last turn, which decides the answer's kind."""
        parts = split_question(question) if self.rules.compound_questions else [question]
        if len(parts) == 1:
            return self._extract_one(question, query, hits)
        extracts = [self._extract_one(part, part if query == question else f"{part} {query}", hits) for part in parts]
        best = max(extracts, key=lambda e: (not e.missing, e.confidence))
        answered = [
            e for e in extracts if e.sentences and not e.missing and e.confidence >= 0.5 * best.confidence
        ]
        if not answered:
            return best
        sentences = _in_reading_order([s for e in answered for s in e.sentences])
        return Extract(
            tuple(sentences),
            min(e.confidence for e in answered),
            best.span,
            tuple(location for e in answered for location in e.spans),
            best.kind,
            best.readings,
        )

    def _extract_one(self, question: str, query: str, hits: Sequence[Hit]) -> Extract:
        kind = classify(question)
        read = list(hits[: self.read_passages])
        if not read:
            return Extract((), 0.0, None, (), kind)
        unknown = self.unknown_names(question) if self.rules.unknown_names else []
        if unknown:
            return Extract((), 0.0, None, (), kind, missing=tuple(unknown))
        readings = self._read(query, read)
        # Most probable first; the better-ranked passage wins a tie.
        ranked = sorted(readings, key=lambda r: (-r.probability, r.passage))
        years = _YEAR.findall(_compact(question)) if self.rules.year_check else []
        if years:
            ranked = [r for r in ranked if all(year in _compact(read[r.passage].chunk.context + read[r.passage].chunk.text) for year in years)]
            if not ranked:
                return Extract((), 0.0, None, (), kind, tuple(readings), missing=tuple(years))
        best = ranked[0]
        if years:
            best = _year_pinned(best, read[best.passage].chunk, years)
        if best.end <= best.start:
            return Extract((), best.probability, None, (), kind, tuple(readings))
        chosen = self._quote(best, read[best.passage], kind)
        locations = [SpanLocation(read[best.passage].chunk.chunk_id, best.start, best.end)]
        ratio = self.rules.second_passage_ratio
        if ratio > 0 and len(ranked) > 1 and len(chosen) < self.max_sentences:
            second = ranked[1]
            if second.end > second.start and second.probability >= ratio * best.probability:
                extra = self._quote(second, read[second.passage], QuestionKind.OTHER)
                length = sum(len(s.text) for s in chosen)
                limit = _MAX_LIST_ANSWER_CHARS if kind is QuestionKind.LIST else _MAX_ANSWER_CHARS
                fresh = [s for s in extra if not any(_overlapping(s, c) for c in chosen)]
                if fresh and length + sum(len(s.text) for s in fresh) <= limit:
                    chosen.extend(fresh)
                    locations.append(SpanLocation(read[second.passage].chunk.chunk_id, second.start, second.end))
        return Extract(
            tuple(_in_reading_order(chosen)),
            best.probability,
            best.text,
            tuple(locations),
            kind,
            tuple(readings),
        )

    def _read(self, query: str, read: Sequence[Hit]) -> list[Reading]:
        """The reader's readings of the hits' chunks, offsets into each chunk's text."""
        heads = [reading_head(hit.chunk.title, hit.chunk.text) if self.rules.passage_titles else "" for hit in read]
        texts = [head + hit.chunk.text for head, hit in zip(heads, read)]
        if self.rules.early_exit:
            readings = self.reader.read(query, texts[:1])
            if len(texts) > 1 and readings[0].probability < self.rules.early_exit:
                rest = self.reader.read(query, texts[1:])
                readings += [replace(reading, passage=reading.passage + 1) for reading in rest]
        else:
            readings = self.reader.read(query, texts)
        return [below_head(reading, len(head)) for reading, head in zip(readings, heads)]

    def unknown_names(self, question: str) -> list[str]:
        """Places, people and organisations the question names (jieba's tags) that no
        document mentions (深圳前海 …): the knowledge base cannot be about them."""
        import jieba.posseg

        return [
            pair.word for pair in jieba.posseg.cut(question)
            if pair.flag in _NAME_TAGS and len(pair.word) >= 2 and pair.word not in self._corpus_text
            and not _QUESTION_WORD.search(pair.word)
        ]

    def _quote(self, reading: Reading, hit: Hit, kind: QuestionKind) -> list[QuotedSentence]:
        """The sentences of the passage that hold the span, and for a list question the
        rest of its enumeration."""
        chunk = hit.chunk
        rank = reading.passage
        chosen = [QuotedSentence(rank, chunk, index, chunk.sentences[index]) for index in _holding(chunk, reading)]
        if not chosen:  # the span lies between sentences (a heading line): quote it alone
            return [QuotedSentence(rank, chunk, -1, (reading.start, reading.end))]
        if self.rules.table_rows:
            for sentence in list(chosen):
                chosen.extend(_rest_of_table_row(sentence))
        if kind is QuestionKind.LIST and self.rules.list_enumeration:
            head = chosen[0]
            chosen.extend(_list_continuation(head))
            chosen.extend(self._sibling_headings(head))
        return _in_reading_order(chosen)

    def _sibling_headings(self, head: QuotedSentence) -> list[QuotedSentence]:
        """When the span is in the heading of a numbered sub-section — "(1)制度联动不足" —
        the list asked for is that heading and its siblings' ((2)区域产业联动有待加强 …)."""
        chunk = head.chunk
        if not (_is_heading_of(chunk, head.sentence_index) and _HEADING_START.match(chunk.section_path[-1])):
            return []
        siblings = self._sections_under.get((chunk.doc_id, chunk.section_path[:-1]), [])
        if len(siblings) > MAX_SIBLING_HEADINGS:
            return []
        return [
            QuotedSentence(head.hit_rank, sibling, 0, _heading_span(sibling))
            for sibling in siblings
            if sibling.chunk_id != chunk.chunk_id
        ]


def _year_pinned(reading: Reading, chunk: Chunk, years: Sequence[str]) -> Reading:
    """The reader's best span, unless its sentence names another year than the question
    and one of its alternatives' sentences names the question's (the 2035 goal quoted for
    a question about 2025, from one passage holding both)."""

    def sentence_years(candidate: Reading) -> set[str]:
        text = "".join(chunk.text[slice(*chunk.sentences[index])] for index in _holding(chunk, candidate))
        return set(_YEAR.findall(_compact(text or candidate.text)))

    held = sentence_years(reading)
    if not held or all(year in held for year in years):
        return reading
    for alternative in reading.alternatives:
        if all(year in sentence_years(alternative) for year in years):
            return alternative
    return reading


def _holding(chunk: Chunk, reading: Reading) -> list[int]:
    """The indices of the chunk's sentences that the reading's span overlaps."""
    return [index for index, (start, end) in enumerate(chunk.sentences) if start < reading.end and reading.start < end]


def _list_continuation(head: QuotedSentence) -> list[QuotedSentence]:
    """The rest of the enumeration the sentence belongs to, in the same chunk: back to its
    一是 when it starts at 二是, and on through items that start with an enumerator
    (二是… / （三）…), continue a run of ；-separated clauses on one line, follow a lead-in
    ending in ：, or open the same way as the item before."""
    spans = head.chunk.sentences

    def text_of(index: int) -> str:
        return head.chunk.text[spans[index][0] : spans[index][1]]

    first = head.sentence_index
    if _ENUMERATION_START.match(text_of(first)):  # a later item (二是…): find 一是
        while first > 0:
            previous = text_of(first - 1)
            if not (_ENUMERATION_START.match(previous) or _FIRST_ITEM.match(previous)):
                break
            first -= 1
            if _FIRST_ITEM.match(previous):
                break
    items = list(range(first, head.sentence_index))
    length = sum(len(text_of(i)) for i in items) + len(head.text)
    for index in range(head.sentence_index + 1, len(spans)):
        previous, text = text_of(index - 1), text_of(index)
        same_line = "\n" not in head.chunk.text[spans[index - 1][1] : spans[index][0]]
        continues = (
            _ENUMERATION_START.match(text)
            or previous.rstrip().endswith(("：", ":"))
            or (same_line and previous.rstrip().endswith(("；", ";")))
            or (len(previous) > 2 and text.lstrip()[:2] == previous.lstrip()[:2])
        )
        if not continues or length + len(text) > _MAX_LIST_ANSWER_CHARS:
            break
        items.append(index)
        length += len(text)
    return [head.sibling(index) for index in items]


_PART_BOUNDARY = re.compile(r"(?<=[？?])(?=.)|[，,;；]")
_ASKS = re.compile(r"什么|哪|多少|多大|多长|多久|几|如何|怎么|怎样|何时|谁|吗|是否")


def split_question(question: str) -> list[str]:
    """The parts of a compound question, each with its own question word; a plain question
    comes back whole."""
    parts: list[str] = []
    pending = ""
    for piece in _PART_BOUNDARY.split(question):
        piece = piece.strip(" ，,;；")
        if not _ASKS.search(piece):  # context such as "进博会期间的特殊政策要常态化，"
            pending = f"{pending}{piece}，"
            continue
        parts.append(pending + piece)
        pending = ""
    if pending and parts:
        parts[-1] += pending
    parts = [p for p in parts if len(_CJK.findall(p)) >= 2]
    return parts if len(parts) >= 2 else [question]


def _is_heading_of(chunk: Chunk, sentence_index: int) -> bool:
    """Is this sentence of the chunk its section's heading line?"""
    if not chunk.section_path or not 0 <= sentence_index < len(chunk.sentences):
        return False
    start, end = chunk.sentences[sentence_index]
    text = chunk.text[start:end].strip().rstrip("。")
    return bool(text) and text in chunk.section_path[-1]


def _heading_span(chunk: Chunk) -> tuple[int, int] | None:
    """Where the chunk opens with its section's heading line, that line's span."""
    if not chunk.section_path:
        return None
    title = chunk.section_path[-1]
    start = len(chunk.text) - len(chunk.text.lstrip())
    if not title or not chunk.text.startswith(title, start):
        return None
    end = start + len(title)
    return start, end + 1 if chunk.text[end : end + 1] == "。" else end


def _rest_of_table_row(sentence: QuotedSentence) -> list[QuotedSentence]:
    """A table row (cells split by tabs) is one answer: its cells are cut into sentences at
    ；, but "智慧会展服务\t场馆建设数字化；会展运营数字化；…" must come back whole."""
    text = sentence.chunk.text
    line_start = text.rfind("\n", 0, sentence.span[0]) + 1
    line_end = text.find("\n", sentence.span[1])
    line_end = len(text) if line_end < 0 else line_end
    if "\t" not in text[line_start:line_end]:
        return []
    return [
        sentence.sibling(index)
        for index, (start, end) in enumerate(sentence.chunk.sentences)
        if index != sentence.sentence_index and start >= line_start and end <= line_end
    ]


def _compact(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _overlapping(a: QuotedSentence, b: QuotedSentence) -> bool:
    """Chunks overlap by a sentence or two, so the same text can appear in two chunks."""
    if a.chunk.doc_id != b.chunk.doc_id:
        return False
    start_a, end_a = a.chunk.char_span[0] + a.span[0], a.chunk.char_span[0] + a.span[1]
    start_b, end_b = b.chunk.char_span[0] + b.span[0], b.chunk.char_span[0] + b.span[1]
    return start_a < end_b and start_b < end_a


def _in_reading_order(sentences: list[QuotedSentence]) -> list[QuotedSentence]:
    """Best chunk first; within a chunk, document order; each passage of text once."""
    chunk_order: dict[str, int] = {}
    unique: dict[tuple[str, int, int], QuotedSentence] = {}
    for sentence in sentences:
        chunk_order.setdefault(sentence.chunk.chunk_id, len(chunk_order))
        unique.setdefault((sentence.chunk.chunk_id, *sentence.span), sentence)
    ordered = sorted(unique.values(), key=lambda s: (chunk_order[s.chunk.chunk_id], s.span[0]))
    kept: list[QuotedSentence] = []
    for sentence in ordered:
        if not any(_overlapping(sentence, other) for other in kept):
            kept.append(sentence)
    return kept
