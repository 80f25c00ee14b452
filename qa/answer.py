"""Extractive answers: pick the best 1–3 sentences of the retrieved chunks and cite them.

Sentence scoring uses only what the index stored at build time (each sentence's analyzer
terms) plus the question's own terms, so answering costs no model call:

    score = coverage × (0.55 + 0.45 × rank_prior) × shape + kind_bonus

- coverage: IDF-weighted share of the question's terms present in the sentence (terms the
  user typed in a follow-up weigh double the ones carried over from history);
- rank_prior: 1 for the top fused chunk, decaying with rank, so retrieval agreement counts;
- shape: a heading-only fragment is worth less than a full sentence;
- kind_bonus: a sentence with a number for 多少, a year for 何时, an enumeration for 哪些.

The best sentence must also meet the question's hard constraints, or the next best one
that does (within CONSTRAINT_SCORE_RATIO of it) answers instead; when none does, the
assistant refuses. The constraints: a year or figure the question names occurs in the
evidence and is not contradicted by the sentence's own year; a 多少 / 何时 question gets a
sentence with a figure / a date, and what a 多少 question counts (多少张床位) is named in the
answering passage; names of 3+ characters the question is about occur in the
answering document (abbreviations such as 进博会 allowed); no place or organisation the
question names is unknown to every document. Refusal also follows from low coverage
(settings.refusal_threshold).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import jieba
import jieba.posseg

from corpus.models import Chunk
from index import Index
from index.models import Hit
from qa.question import DATE_PATTERN, NUMBER_PATTERN, QuestionKind, classify

_ENUMERATION_START = re.compile(
    r"^\s*(?:[二三四五六七八九十]+是|其[二三四五六七八九十]|第[二三四五六七八九十]|"
    r"[（(][二三四五六七八九十\d]+[）)]|\d+[.、．]|[②③④⑤⑥⑦⑧⑨⑩]|[-•·])"
)
_QUESTION_WORD = re.compile(r"哪|什么|多少|几|怎么|如何|是否|吗")
_NAME_TAGS = {"ns", "nr", "nrt", "nt", "nz"}  # jieba's place, person, organisation, other-name tags
_FIRST_ITEM = re.compile(r"^\s*(?:一是|其一|第一|[（(][一1][）)]|1[.、．]|①)")
_HEADING_START = re.compile(r"^\s*(?:[一二三四五六七八九十]+、|[（(][一二三四五六七八九十\d]+[）)]|\d+[.、．])")
_YEAR = re.compile(r"(?:19|20)\d{2}(?=年)")
_YEAR_OR_NUMBER_IN_QUESTION = re.compile(r"(?:19|20)\d{2}|\d+(?:\.\d+)?")
_CJK = re.compile(r"[\u4e00-\u9fff]")
HEADING_CREDIT = 0.5
ANCHOR_MIN_CHARS = 3
CONSTRAINT_CANDIDATES = 8  # sentences tried, best first, for one that meets the constraints
CONSTRAINT_SCORE_RATIO = 0.8  # ... as long as it scores at least this share of the best
MAX_SIBLING_HEADINGS = 8  # a longer run of sub-sections is an outline, not a list answer
SECOND_SENTENCE_RATIO = 0.6  # another passage's sentence joins the answer if this close
_MAX_ANSWER_CHARS = 260
_MAX_LIST_ANSWER_CHARS = 600


@dataclass(frozen=True)
class ScoredSentence:
    hit_rank: int  # 0-based rank of the chunk in the fused list
    chunk: Chunk
    sentence_index: int
    span: tuple[int, int]  # relative to chunk.text
    coverage: float
    score: float
    heading_share: float = 0.0  # part of `coverage` credited by the headings above it

    @property
    def text(self) -> str:
        return self.chunk.text[self.span[0] : self.span[1]]

    def sibling(self, sentence_index: int) -> "ScoredSentence":
        """Another sentence of the same chunk, quoted alongside this one (same scores)."""
        return ScoredSentence(
            self.hit_rank, self.chunk, sentence_index, self.chunk.sentences[sentence_index],
            self.coverage, self.score,
        )


@dataclass(frozen=True)
class Demands:
    """What a question requires of any sentence that answers it, worked out once."""

    figures: tuple[str, ...]  # years and numbers the question names
    years: tuple[str, ...]
    names: tuple[str, ...]  # words of 3+ characters the corpus knows: what it is about
    measured: str | None  # what a 多少 question counts


@dataclass(frozen=True)
class Extract:
    """The answer step's result: chosen sentences grouped by chunk, in answer order."""

    sentences: tuple[ScoredSentence, ...]
    evidence_score: float  # coverage of the best sentence, 0..1
    missing_constraints: tuple[str, ...]  # what the question demands and no sentence gives
    span: str | None
    kind: QuestionKind

    @property
    def text(self) -> str:
        parts: list[str] = []
        previous: ScoredSentence | None = None
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


class Answerer:
    """Selects answer sentences from fused hits, using per-sentence terms stored at build time."""

    def __init__(self, index: Index, max_sentences: int = 3, read_depth: int = 10):
        self.index = index
        self.max_sentences = max_sentences
        self.read_depth = read_depth
        self._position = {chunk.chunk_id: i for i, chunk in enumerate(index.chunks)}
        self._idf = self._inverse_document_frequencies(index)
        # A body sentence rarely repeats its heading's words ("聚焦优流程、减单证…" under
        # "深化跨境贸易降费提速改革"), so each sentence also gets partial credit for the
        # terms of the headings above it. Analysed once here, not per question.
        self._heading_terms = [
            set(index.analyze(" ".join(chunk.section_path[-2:]))) if chunk.section_path else set()
            for chunk in index.chunks
        ]
        self._document_text = {document.doc_id: document.text for document in index.documents}
        self._document_terms: dict[str, set[str]] = {}
        for position, chunk in enumerate(index.chunks):
            terms = self._document_terms.setdefault(chunk.doc_id, set(index.analyze(chunk.title)))
            terms.update(term for sentence in index.sentence_terms(position) for term in sentence)
            terms.update(self._heading_terms[position])
        self._section_text = [self._section_of(chunk) for chunk in index.chunks]
        self._compact_document_text = {
            doc_id: _without_spaces(text) for doc_id, text in self._document_text.items()
        }
        # One string per document so "is this word part of a longer word of the document"
        # is a single substring test, not a loop over thousands of terms per question.
        self._joined_document_terms = {
            doc_id: "\x1f".join(terms) for doc_id, terms in self._document_terms.items()
        }
        self._corpus_text = _without_spaces("".join(self._document_text.values()))
        # The chunks that open a section with its heading line, grouped by parent section,
        # in document order: the items of a list made of sub-sections ((1)… (2)…).
        self._sections_under: dict[tuple[str, tuple[str, ...]], list[Chunk]] = {}
        for chunk in index.chunks:
            if _heading_span(chunk) is not None:
                key = (chunk.doc_id, chunk.section_path[:-1])
                self._sections_under.setdefault(key, []).append(chunk)
        jieba.initialize()  # the part-of-speech tagger's dictionary, loaded once, not per question

    def _section_of(self, chunk: Chunk) -> str:
        """The whole text of the chunk's section (tables put a year in a header row that
        the chunk holding a figure may not include)."""
        text = self._document_text.get(chunk.doc_id, "")
        document = next((d for d in self.index.documents if d.doc_id == chunk.doc_id), None)
        if document is not None and chunk.section_path:
            for section in document.sections:
                if section.path == chunk.section_path:
                    return _without_spaces(chunk.section + text[section.char_span[0] : section.char_span[1]])
        return _without_spaces(chunk.section + chunk.text)

    @staticmethod
    def _inverse_document_frequencies(index: Index) -> dict[str, float]:
        document_frequency: dict[str, int] = {}
        for position in range(len(index.chunks)):
            terms = {term for sentence in index.sentence_terms(position) for term in sentence}
            for term in terms:
                document_frequency[term] = document_frequency.get(term, 0) + 1
        total = max(len(index.chunks), 1)
        return {
            term: math.log(1.0 + (total - count + 0.5) / (count + 0.5))
            for term, count in document_frequency.items()
        }

    def _idf_of(self, term: str) -> float:
        # A term the corpus never contains is as informative as the rarest one: it must
        # count against coverage, which is what lets us refuse off-corpus questions.
        return self._idf.get(term, math.log(1.0 + (len(self.index.chunks) + 0.5) / 0.5))

    def question_weights(self, query: str, focus: str | None = None) -> dict[str, float]:
        weights: dict[str, float] = {}
        for term in self.index.analyze(query):
            weights[term] = self._idf_of(term)
        if focus and focus != query:
            for term in self.index.analyze(focus):
                weights[term] = 2.0 * self._idf_of(term)
        return weights

    def extract(self, question: str, query: str, focus: str, hits: Sequence[Hit]) -> Extract:
        """The answer sentences for `question` from `hits`. A compound question
        ("…是哪个单位发的？文号多少？") is answered part by part and the parts joined."""
        parts = split_question(question)
        if len(parts) == 1:
            return self._extract_one(question, query, focus, hits)
        extracts = [self._extract_one(part, f"{part} {query}", part, hits) for part in parts]
        answered = [e for e in extracts if e.sentences and not e.missing_constraints]
        if not answered:
            return extracts[0]
        sentences = _in_reading_order([s for e in answered for s in e.sentences])
        return Extract(
            tuple(sentences),
            max(e.evidence_score for e in answered),
            (),
            next((e.span for e in answered if e.span), None),
            answered[0].kind,
        )

    def _extract_one(self, question: str, query: str, focus: str, hits: Sequence[Hit]) -> Extract:
        kind = classify(question)
        weights = self.question_weights(query, focus)
        total_weight = sum(weights.values()) or 1.0
        scored: list[ScoredSentence] = []
        for rank, hit in enumerate(hits[: self.read_depth]):
            position = self._position[hit.chunk.chunk_id]
            sentence_terms = self.index.sentence_terms(position)
            heading_terms = self._heading_terms[position]
            rank_prior = 1.0 / (1.0 + 0.35 * rank)
            for sentence_index, span in enumerate(hit.chunk.sentences):
                terms = set(sentence_terms[sentence_index]) if sentence_index < len(sentence_terms) else set()
                own = sum(weight for term, weight in weights.items() if term in terms)
                inherited = sum(
                    weight for term, weight in weights.items() if term in heading_terms and term not in terms
                )
                coverage = (own + HEADING_CREDIT * inherited) / total_weight
                text = hit.chunk.text[span[0] : span[1]]
                score = coverage * (0.55 + 0.45 * rank_prior) * _shape_factor(text, hit.chunk)
                score += _kind_bonus(kind, text) * coverage
                heading_share = HEADING_CREDIT * inherited / total_weight
                scored.append(
                    ScoredSentence(rank, hit.chunk, sentence_index, span, coverage, score, heading_share)
                )
        if not scored:
            return Extract((), 0.0, (), None, kind)
        scored.sort(key=lambda s: (-s.score, s.hit_rank, s.sentence_index))
        unknown = self.unknown_names(question)
        if unknown:
            return Extract((scored[0],), scored[0].coverage, tuple(unknown), None, kind)
        # The best sentence that meets the question's hard constraints answers, as long as it
        # is not far behind the top one; when none does, the top one is kept and its unmet
        # constraints make the assistant refuse.
        demands = self._demands(question, focus, kind)
        hits_text = _without_spaces("".join(hit.chunk.text for hit in hits[: self.read_depth]))
        best, missing = scored[0], self._unmet_constraints(kind, demands, scored[0], hits_text)
        if missing:
            for candidate in scored[1:CONSTRAINT_CANDIDATES]:
                if candidate.score < CONSTRAINT_SCORE_RATIO * scored[0].score:
                    break
                if not self._unmet_constraints(kind, demands, candidate, hits_text):
                    best, missing = candidate, []
                    break
        chosen = self._choose(best, [s for s in scored if s is not best], kind)
        span = _tight_span(kind, best.text, weights) if kind in (QuestionKind.NUMBER, QuestionKind.DATE) else None
        return Extract(tuple(chosen), best.coverage, tuple(missing), span, kind)

    def unknown_names(self, question: str) -> list[str]:
        """Places, people and organisations the question names that no document mentions
        (深圳前海, 杭州 ...): the knowledge base cannot be about them."""
        return [
            pair.word for pair in jieba.posseg.cut(question)
            if pair.flag in _NAME_TAGS and len(pair.word) >= 2 and pair.word not in self._corpus_text
            and not _QUESTION_WORD.search(pair.word)
        ]

    def _demands(self, question: str, focus: str, kind: QuestionKind) -> Demands:
        compact = _without_spaces(question)
        asked = set(self.index.analyze(question)) | set(self.index.analyze(focus))
        return Demands(
            figures=tuple(_YEAR_OR_NUMBER_IN_QUESTION.findall(compact)),
            years=tuple(_YEAR.findall(compact)),
            names=tuple(sorted(
                term for term in asked
                if len(term) >= ANCHOR_MIN_CHARS and term in self._idf and not _QUESTION_WORD.search(term)
            )),
            measured=measured_noun(question) if kind is QuestionKind.NUMBER else None,
        )

    def _unmet_constraints(
        self, kind: QuestionKind, demands: Demands, sentence: ScoredSentence, hits_text: str
    ) -> list[str]:
        """What the question demands that `sentence` (in its document) does not give."""
        doc_id = sentence.chunk.doc_id
        # A year or figure the question names must occur in the retrieved passages or the
        # answering document.
        document_text = self._compact_document_text.get(doc_id, "")
        missing = [
            token for token in demands.figures if token not in hits_text and token not in document_text
        ]
        # A sentence that dates its figure to another year ("2021 年…税收总额") does not
        # answer "2022年税收", unless its section speaks of the asked year too.
        section_text = self._section_text[self._position[sentence.chunk.chunk_id]]
        other_years = set(_YEAR.findall(_without_spaces(sentence.text)))
        missing += [
            year for year in demands.years
            if year not in section_text and other_years - {year} and year not in missing
        ]
        missing += self._missing_names(demands, doc_id)
        if not _has_answer_type(kind, sentence.text):
            missing.append(f"<{kind.value}>")
        elif demands.measured:
            context = sentence.chunk.section + sentence.chunk.text
            if demands.measured not in context and not _abbreviation_in(demands.measured, context):
                missing.append(f"<{demands.measured}>")
        return missing

    def _missing_names(self, demands: Demands, doc_id: str) -> list[str]:
        """Names the question is about (words of 3+ characters that the corpus knows, such as
        临港新片区 or 钻石交易所) that the answering document never mentions: the passage is
        then about something else, however many other words it shares. Checked against the
        whole document, since documents name their subject once and abbreviate after."""
        terms = self._document_terms.get(doc_id, set())
        joined_terms = self._joined_document_terms.get(doc_id, "")
        document_text = self._document_text.get(doc_id, "")
        return [
            term for term in demands.names
            if term not in terms and term not in joined_terms  # nor part of a longer word
            and not _abbreviation_in(term, document_text)
        ]

    def _choose(
        self, best: ScoredSentence, others: list[ScoredSentence], kind: QuestionKind
    ) -> list[ScoredSentence]:
        chosen = [best]
        heading = best.chunk.sentences[0] if best.chunk.sentences else None
        if (
            best.sentence_index > 0 and heading is not None and best.heading_share > best.coverage / 2
            and best.chunk.section_path
            and best.chunk.text[heading[0] : heading[1]].strip().rstrip("。") in best.chunk.section_path[-1]
        ):
            # The sentence matched through its heading ("1. 西虹桥片区"): quote the heading too,
            # it names what the sentence is about.
            chosen.append(best.sibling(0))
        following = best.sentence_index + 1
        if len(_CJK.findall(best.text)) < 20 and following < len(best.chunk.sentences):
            # a run-in heading ("深化跨境贸易降费提速改革。") says what, the next sentence how
            chosen.append(best.sibling(following))
        chosen.extend(_rest_of_table_row(best))
        if kind is QuestionKind.LIST:
            chosen.extend(self._list_continuation(best))
            chosen.extend(self._sibling_headings(best))
        limit = _MAX_LIST_ANSWER_CHARS if kind is QuestionKind.LIST else _MAX_ANSWER_CHARS
        length = sum(len(s.text) for s in chosen)
        for candidate in others:
            if len(chosen) >= self.max_sentences:
                break
            if candidate.score < SECOND_SENTENCE_RATIO * best.score or length + len(candidate.text) > limit:
                continue
            if any(_same_sentence(candidate, c) or _overlapping(candidate, c) for c in chosen):
                continue
            chosen.append(candidate)
            length += len(candidate.text)
        return _in_reading_order(chosen)

    def _sibling_headings(self, best: ScoredSentence) -> list[ScoredSentence]:
        """When the best sentence is (or matched through) the heading of a numbered
        sub-section — "(1)制度联动不足" — the list asked for is that heading and its
        siblings' ((2)区域产业联动有待加强 …)."""
        chunk = best.chunk
        matched_by_heading = _is_heading_of(chunk, best.sentence_index) or best.heading_share > best.coverage / 2
        if not (matched_by_heading and _HEADING_START.match(chunk.section_path[-1])):
            return []
        siblings = self._sections_under.get((chunk.doc_id, chunk.section_path[:-1]), [])
        if len(siblings) > MAX_SIBLING_HEADINGS:
            return []
        return [
            ScoredSentence(best.hit_rank, sibling, 0, _heading_span(sibling), best.coverage, best.score)
            for sibling in siblings
            if sibling.chunk_id != chunk.chunk_id
        ]

    def _list_continuation(self, head: ScoredSentence) -> list[ScoredSentence]:
        """The rest of the enumeration the best sentence belongs to, in the same chunk, so a
        哪些 question gets the whole list: back to its 一是 when it starts at 二是, and on
        through items that start with an enumerator (二是… / （三）…), continue a run of
        ；-separated clauses on one line, follow a lead-in ending in ：, or open the same
        way as the item before (防范贸易风险… 防范金融风险…)."""
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
        last = head.sentence_index
        for index in range(last + 1, len(spans)):
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


_ASKS = re.compile(r"什么|哪|多少|多大|多长|多久|几|如何|怎么|怎样|何时|谁|吗|是否")


_HOW_MANY = {"多少", "几", "多"}


def measured_noun(question: str) -> str | None:
    """What a 多少 question counts: the noun after 多少(+measure word) — 多少张**床位** — or
    else the last noun before it — 咨询**电话**是多少. A figure about something else does
    not answer it."""
    if "分别" in question:  # several things are counted; no single noun to require
        return None
    words = [(pair.word, pair.flag) for pair in jieba.posseg.cut(question)]
    for index, (word, _flag) in enumerate(words):
        if word not in _HOW_MANY:
            continue
        for after, flag in words[index + 1 : index + 3]:
            if flag.startswith("n") and len(after) >= 2:
                return after
        for before, flag in reversed(words[:index]):
            if flag.startswith("n") and len(before) >= 2:
                return before
        return None
    return None


def _is_heading_of(chunk: Chunk, sentence_index: int) -> bool:
    """Is this sentence of the chunk its section's heading line?"""
    if not chunk.section_path or sentence_index >= len(chunk.sentences):
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


def _rest_of_table_row(sentence: ScoredSentence) -> list[ScoredSentence]:
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


def _has_answer_type(kind: QuestionKind, sentence: str) -> bool:
    """A 多少 question is answered by a sentence with a figure in it; a 何时 question by one
    with a date or period."""
    if kind is QuestionKind.NUMBER:
        return bool(re.search(r"\d|[一二两三四五六七八九十百千万]+\s*[届家个项倍年次条座所类大]|若干|一批", sentence))
    if kind is QuestionKind.DATE:
        return bool(re.search(r"\d|[一二三四五六七八九十]+\s*[年月届]|每年|年底|年内|同期|以来", sentence))
    return True


def _abbreviation_in(term: str, text: str) -> bool:
    """Chinese abbreviates by keeping characters in order (进博会 for 进口博览会, 综保区 for
    综合保税区): does `text` hold such a longer form of `term`?"""
    pattern = "[^，。；、\\s]{0,3}".join(re.escape(char) for char in term)
    return re.search(pattern, text) is not None


def _without_spaces(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _shape_factor(text: str, chunk: Chunk) -> float:
    """Headings and fragments make poor answers: the body sentence under them answers."""
    stripped = text.strip().rstrip("。；;")
    if len(_CJK.findall(stripped)) < 6:
        return 0.3
    if chunk.section_path and stripped and stripped in chunk.section_path[-1]:
        return 0.4
    if len(stripped) < 25 and _HEADING_START.match(stripped):
        return 0.5
    if len(stripped) < 20 and not text.strip().endswith(("。", "；", "！", "？")):
        return 0.6
    if len(_CJK.findall(stripped)) < 14:
        return 0.7  # a run-in heading such as "深化跨境贸易降费提速改革。"
    return 1.0


def _kind_bonus(kind: QuestionKind, text: str) -> float:
    if kind is QuestionKind.NUMBER and re.search(r"\d", text):
        return 0.15
    if kind is QuestionKind.DATE and DATE_PATTERN.search(text):
        return 0.15
    if kind is QuestionKind.LIST and (text.count("、") >= 2 or "：" in text or _ENUMERATION_START.match(text)):
        return 0.1
    if kind is QuestionKind.DEFINITION and re.search(r"是指|是|指|即", text):
        return 0.05
    return 0.0


def _tight_span(kind: QuestionKind, sentence: str, weights: dict[str, float]) -> str | None:
    """The number or date in the sentence closest after the question's terms, if any."""
    pattern = DATE_PATTERN if kind is QuestionKind.DATE else NUMBER_PATTERN
    matches = [m for m in pattern.finditer(sentence) if re.search(r"\d", m.group(0))]
    if not matches:
        return None
    anchors = [sentence.find(term) for term in weights if len(term) > 1 and term in sentence]
    if not anchors:
        return matches[0].group(0).strip()

    def distance(match: re.Match[str]) -> int:
        return min(abs(match.start() - (anchor + 2)) for anchor in anchors)

    return min(matches, key=distance).group(0).strip()


def _same_sentence(a: ScoredSentence, b: ScoredSentence) -> bool:
    return a.chunk.chunk_id == b.chunk.chunk_id and a.sentence_index == b.sentence_index


def _overlapping(a: ScoredSentence, b: ScoredSentence) -> bool:
    """Chunks overlap by a sentence or two, so the same text can appear in two chunks."""
    if a.chunk.doc_id != b.chunk.doc_id:
        return False
    start_a = a.chunk.char_span[0] + a.span[0]
    start_b = b.chunk.char_span[0] + b.span[0]
    end_a = a.chunk.char_span[0] + a.span[1]
    end_b = b.chunk.char_span[0] + b.span[1]
    return start_a < end_b and start_b < end_a


def _in_reading_order(sentences: list[ScoredSentence]) -> list[ScoredSentence]:
    """Best chunk first; within a chunk, document order."""
    chunk_order: dict[str, int] = {}
    unique: dict[tuple[str, int], ScoredSentence] = {}
    for sentence in sentences:
        chunk_order.setdefault(sentence.chunk.chunk_id, len(chunk_order))
        unique.setdefault((sentence.chunk.chunk_id, sentence.sentence_index), sentence)
    return sorted(unique.values(), key=lambda s: (chunk_order[s.chunk.chunk_id], s.span[0]))
