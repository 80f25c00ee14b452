"""The answer step around the reader's span, with a stub reader that points at a chosen
string (the real reader is tested in test_reader.py and end to end in test_qa.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from index.models import Hit
from qa.answer import Answerer, AnswerRules, split_question
from qa.question import QuestionKind
from qa.reader import Reader, Reading


class PointingReader:
    """Reads every passage; the span is the first of `targets` found in it, with that
    target's probability; passages holding none get probability 0."""

    def __init__(self, targets: dict[str, float]):
        self.targets = targets
        self.calls: list[tuple[str, int]] = []

    def read(self, question: str, passages: Sequence[str]) -> list[Reading]:
        self.calls.append((question, len(passages)))
        readings = []
        for index, passage in enumerate(passages):
            for target, probability in self.targets.items():
                start = passage.find(target)
                if start >= 0:
                    readings.append(Reading(start, start + len(target), target, probability, index))
                    break
            else:
                readings.append(Reading(0, 0, "", 0.0, index))
        return readings


def _chunk_with(seed_index, *needles: str):
    return next(chunk for chunk in seed_index.chunks if all(needle in chunk.text for needle in needles))


def _hits(*chunks) -> list[Hit]:
    return [Hit(chunk=chunk, score=1.0 - 0.1 * rank) for rank, chunk in enumerate(chunks)]


def test_stub_is_a_reader():
    assert isinstance(PointingReader({}), Reader)


def test_answer_is_the_sentence_holding_the_span(seed_index):
    chunk = _chunk_with(seed_index, "全市首个国际会展产业园")
    other = _chunk_with(seed_index, "一是创新贸易博览新形式")
    answerer = Answerer(PointingReader({"23个": 0.93}), seed_index.chunks)
    extract = answerer.extract("举办了多少个展览？", "举办了多少个展览？", _hits(other, chunk))
    assert extract.span == "23个" and extract.confidence == pytest.approx(0.93)
    assert extract.text.startswith("作为全市首个国际会展产业园") and "23个" in extract.text
    assert "青浦区围绕会展经济" not in extract.text  # the neighbouring sentence is not quoted
    location = extract.spans[0]
    assert location.chunk_id == chunk.chunk_id and chunk.text[location.start : location.end] == "23个"


def test_no_span_gives_no_sentences(seed_index):
    chunk = _chunk_with(seed_index, "全市首个国际会展产业园")
    extract = Answerer(PointingReader({}), seed_index.chunks).extract("问题？", "问题？", _hits(chunk))
    assert extract.sentences == () and extract.confidence == 0.0


def test_reader_reads_only_the_top_passages(seed_index):
    reader = PointingReader({})
    chunks = seed_index.chunks[:8]
    Answerer(reader, seed_index.chunks, read_passages=3).extract("问题？", "问题？", _hits(*chunks))
    assert reader.calls == [("问题？", 3)]


def test_list_question_quotes_the_whole_enumeration(seed_index):
    chunk = _chunk_with(seed_index, "一是在集成电路领域", "二是在人工智能领域", "四是在航空航天领域")
    reader = PointingReader({"聚焦前沿的人工智能技术研发": 0.8})
    listed = Answerer(reader, seed_index.chunks).extract("重点领域有哪些？", "重点领域有哪些？", _hits(chunk))
    assert listed.text.startswith("一是在集成电路领域")
    assert "二是在人工智能领域" in listed.text and "四是在航空航天领域" in listed.text
    single = Answerer(reader, seed_index.chunks, rules=AnswerRules(list_enumeration=False)).extract(
        "重点领域有哪些？", "重点领域有哪些？", _hits(chunk)
    )
    assert single.text.startswith("二是在人工智能领域") and "一是" not in single.text


def test_a_second_passage_joins_only_when_nearly_as_probable(seed_index):
    first = _chunk_with(seed_index, "全市首个国际会展产业园")
    second = _chunk_with(seed_index, "一是创新贸易博览新形式")
    close = PointingReader({"23个": 0.9, "创新贸易博览新形式": 0.85})
    extract = Answerer(close, seed_index.chunks).extract("问题？", "问题？", _hits(first, second))
    assert "23个" in extract.text and "创新贸易博览新形式" in extract.text
    assert {location.chunk_id for location in extract.spans} == {first.chunk_id, second.chunk_id}
    far = PointingReader({"23个": 0.9, "创新贸易博览新形式": 0.3})
    extract = Answerer(far, seed_index.chunks).extract("问题？", "问题？", _hits(first, second))
    assert "创新贸易博览新形式" not in extract.text


def test_table_row_is_quoted_whole(seed_index):
    """A row whose cells the sentence splitter cuts at ； comes back whole."""
    def row_of(chunk):
        for start, end in chunk.sentences:
            line_start = chunk.text.rfind("\n", 0, start) + 1
            line_end = chunk.text.find("\n", end)
            line = chunk.text[line_start : line_end if line_end >= 0 else len(chunk.text)]
            if "\t" in line and chunk.text[start:end].strip() and chunk.text[start:end].strip() != line.strip():
                return chunk.text[start:end].strip(), line.strip()
        return None

    chunk, (cell, line) = next((c, row_of(c)) for c in seed_index.chunks if row_of(c))
    whole = Answerer(PointingReader({cell: 0.9}), seed_index.chunks).extract("问题？", "问题？", _hits(chunk))
    assert whole.text.replace("\n", "") == line.replace("\n", "")
    alone = Answerer(PointingReader({cell: 0.9}), seed_index.chunks, rules=AnswerRules(table_rows=False))
    assert alone.extract("问题？", "问题？", _hits(chunk)).text == cell


def test_compound_question_is_split_into_parts():
    assert split_question("这份文件是哪个单位发的？文号是多少？") == ["这份文件是哪个单位发的？", "文号是多少？"]
    assert split_question("虹桥商务区面积多大？") == ["虹桥商务区面积多大？"]


def test_compound_question_reads_each_part(seed_index):
    chunk = _chunk_with(seed_index, "全市首个国际会展产业园")
    reader = PointingReader({"23个": 0.9})
    extract = Answerer(reader, seed_index.chunks).extract(
        "举办了多少个展览？接待了多少人次？", "举办了多少个展览？接待了多少人次？", _hits(chunk)
    )
    assert [question for question, _ in reader.calls] == ["举办了多少个展览？", "接待了多少人次？"]
    assert extract.kind is QuestionKind.NUMBER


def test_a_year_the_passage_lacks_moves_the_answer_or_refuses(seed_index):
    with_year = _chunk_with(seed_index, "全市首个国际会展产业园", "2021年")
    other = _chunk_with(seed_index, "一是创新贸易博览新形式")
    reader = PointingReader({"创新贸易博览新形式": 0.9, "23个": 0.6})
    extract = Answerer(reader, seed_index.chunks).extract("2021年举办了多少展览？", "2021年举办了多少展览？", _hits(other, with_year))
    assert extract.span == "23个" and not extract.missing  # the passage naming 2021 answers
    refused = Answerer(reader, seed_index.chunks).extract("2035年举办了多少展览？", "2035年举办了多少展览？", _hits(other, with_year))
    assert refused.missing == ("2035",) and refused.sentences == ()
    unchecked = Answerer(reader, seed_index.chunks, rules=AnswerRules(year_check=False))
    assert unchecked.extract("2035年举办了多少展览？", "2035年举办了多少展览？", _hits(other, with_year)).sentences


def test_a_place_no_document_names_is_refused(seed_index):
    chunk = _chunk_with(seed_index, "全市首个国际会展产业园")
    answerer = Answerer(PointingReader({"23个": 0.9}), seed_index.chunks)
    assert answerer.extract("深圳前海举办了多少展览？", "深圳前海举办了多少展览？", _hits(chunk)).missing
    assert not answerer.extract("青浦区举办了多少展览？", "青浦区举办了多少展览？", _hits(chunk)).missing



def test_a_year_named_only_in_the_table_header_passes_the_year_check(seed_index):
    """A chunk that starts inside a table carries the table's header row, and the year
    check reads it: the column says 2025 even though the chunk's rows do not."""
    chunk = next(c for c in seed_index.chunks if c.table_header and "2025" in c.table_header)
    assert "2025" not in chunk.text
    cell = next(part for part in chunk.text.split("\t") if "左右" in part)
    answerer = Answerer(PointingReader({cell: 0.9}), seed_index.chunks)
    extract = answerer.extract("2025年目标是多少？", "2025年目标是多少？", _hits(chunk))
    assert not extract.missing and extract.span == cell
    assert answerer.extract("2035年目标是多少？", "2035年目标是多少？", _hits(chunk)).missing == ("2035",)


class RankedReader:
    """One passage, read as `spans` in order of probability: the first the reading, the
    rest its alternatives."""

    def __init__(self, spans: Sequence[tuple[str, float]]):
        self.spans = spans

    def read(self, question: str, passages: Sequence[str]) -> list[Reading]:
        starts = [passages[0].find(text) for text, _ in self.spans]
        found = [
            Reading(start, start + len(text), text, probability, 0)
            for start, (text, probability) in zip(starts, self.spans)
        ]
        return [replace(found[0], alternatives=tuple(found[1:]))]


@pytest.mark.parametrize("year_check, quoted", [(True, "基本建成"), (False, "全面建成")])
def test_a_span_in_another_years_sentence_gives_way_to_the_asked_years(seed_index, year_check, quoted):
    chunk = _chunk_with(seed_index, "到 2025 年，虹桥国际开放枢纽基本建成", "到 2035 年，虹桥国际开放枢纽全面建成")
    reader = RankedReader([("全面建成", 0.6), ("基本建成", 0.3)])
    answerer = Answerer(reader, seed_index.chunks, rules=AnswerRules(year_check=year_check))
    extract = answerer.extract("2025年要达到什么目标？", "2025年要达到什么目标？", _hits(chunk))
    assert extract.span == quoted
    assert ("2025" in extract.text) is year_check
    # a question that names no year, or the year of the best span, keeps the best span
    for question in ("要达到什么目标？", "2035年要达到什么目标？"):
        assert answerer.extract(question, question, _hits(chunk)).span == "全面建成"


class SeeingReader(RankedReader):
    """A `RankedReader` of the spans found in the passage, keeping the passages it saw."""

    def read(self, question: str, passages: Sequence[str]) -> list[Reading]:
        self.seen = list(passages)
        found = [(text, probability) for text, probability in self.spans if text in passages[0]]
        return RankedReader(found).read(question, passages)


@pytest.mark.parametrize("titles", [True, False])
def test_the_reader_sees_the_title_but_a_span_in_it_gives_way_to_one_in_the_text(seed_index, titles):
    chunk = _chunk_with(seed_index, "全市首个国际会展产业园")
    assert chunk.title and not chunk.text.startswith(chunk.title)
    reader = SeeingReader([(chunk.title, 0.9), ("23个", 0.6)])
    answerer = Answerer(reader, seed_index.chunks, rules=AnswerRules(passage_titles=titles))
    extract = answerer.extract("举办了多少个展览？", "举办了多少个展览？", _hits(chunk))
    assert reader.seen == [f"{chunk.title}\n{chunk.text}" if titles else chunk.text]
    # with titles, the title cannot be quoted: the next span, moved back into the text
    assert extract.span == "23个" and extract.confidence == pytest.approx(0.6)
    location = extract.spans[0]
    assert chunk.text[location.start : location.end] == "23个"
