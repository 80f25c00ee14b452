"""Reading-comprehension examples for training and testing the reader.

SQuAD-format files (CMRC 2018, DRCD) become `ReadingExample`s; DRCD is traditional Chinese
and is converted with OpenCC `t2s`, each answer re-found in the converted paragraph.
Unanswerable examples pair a question with a strong BM25 hit from another article, or with
its own paragraph once the sentences holding the answer are taken out (the topic is still
there, the asked fact is not: the near miss users ask most), and the seed eval's dev split
adds in-domain examples: each question with the passages the retriever returns for it.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from corpus.text import SENTENCE_END


@dataclass(frozen=True)
class ReadingExample:
    """A question over one passage. `answers` are (text, start) in `context`; empty when
    the passage does not answer the question."""

    qid: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]
    source: str  # "cmrc2018", "drcd", "negative:<source>", "removed:<source>", "seed"
    article: str = ""
    title: str = ""  # the article's or document's title, which the reader sees above `context`

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


def file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _relocate(context: str, text: str, start: int) -> int | None:
    """The offset of `text` in `context`: `start` when it sits there, else the nearest
    occurrence (conversion can shift offsets), else None."""
    if not text:
        return None
    if context[start : start + len(text)] == text:
        return start
    found, best = context.find(text), None
    while found != -1:
        if best is None or abs(found - start) < abs(best - start):
            best = found
        found = context.find(text, found + 1)
    return best


def load_squad(
    path: Path, source: str, convert: Callable[[str], str] | None = None
) -> list[ReadingExample]:
    """Every question of a SQuAD-format file; with `convert` (e.g. OpenCC t2s) applied to
    paragraphs, questions and answers, answers re-found after conversion. Questions none of
    whose answers can be placed are dropped."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
    convert = convert or (lambda text: text)
    examples = []
    for article_number, article in enumerate(data):
        article_id = f"{source}:{article.get('id') or article.get('title') or article_number}"
        title = convert(article.get("title") or "").strip()
        for paragraph in article["paragraphs"]:
            original = paragraph["context"]
            context = convert(original)
            for qa in paragraph["qas"]:
                answers = []
                for answer in qa.get("answers", []):
                    text = convert(answer["text"]).strip()
                    start = _relocate(context, text, int(answer["answer_start"]))
                    if start is not None and (text, start) not in answers:
                        answers.append((text, start))
                if answers:
                    examples.append(
                        ReadingExample(
                            qid=str(qa["id"]),
                            question=convert(qa["question"]).strip(),
                            context=context,
                            answers=tuple(answers),
                            source=source,
                            article=article_id,
                            title=title,
                        )
                    )
    return examples


def t2s() -> Callable[[str], str]:
    import opencc

    return opencc.OpenCC("t2s").convert


def load_drcd(path: Path) -> list[ReadingExample]:
    return load_squad(path, "drcd", t2s())


def bm25_negatives(
    examples: Sequence[ReadingExample], analyze: Callable[[str], list[str]], share: float, seed: int
) -> list[ReadingExample]:
    """For a `share` of the questions, the best BM25 paragraph from another article, as an
    unanswerable example (a near miss: it shares the question's words)."""
    from index.bm25 import Bm25Index

    paragraphs: list[ReadingExample] = []  # one example per paragraph, in first-seen order
    seen: set[str] = set()
    for example in examples:
        if example.context not in seen:
            seen.add(example.context)
            paragraphs.append(example)
    bm25 = Bm25Index.build([analyze(paragraph.context) for paragraph in paragraphs])
    rng = random.Random(seed)
    chosen = [example for example in examples if rng.random() < share]
    negatives = []
    for example in chosen:
        for position, _score in bm25.top_k(analyze(example.question), 10):
            other = paragraphs[position]
            if other.article != example.article and not any(text in other.context for text, _ in example.answers):
                negatives.append(_unanswerable(example, other.context, "negative", other.article, other.title))
                break
    return negatives


# Cut after each sentence-final mark or line end, keeping every character (the kept
# sentences are joined back as they were).
_AFTER_SENTENCE = re.compile(rf"(?<=[{SENTENCE_END}\n])")


def answer_removed_negatives(
    examples: Sequence[ReadingExample], share: float, seed: int, min_chars: int = 60
) -> list[ReadingExample]:
    """For a `share` of the questions, their own paragraph without the sentences that hold
    any of the answers, as an unanswerable example. Skipped when an answer's text still
    occurs in what is left, or when less than `min_chars` characters are left."""
    rng = random.Random(seed)
    negatives = []
    for example in examples:
        if rng.random() >= share:
            continue
        spans = [(start, start + len(text)) for text, start in example.answers]
        kept, offset = [], 0
        for sentence in _AFTER_SENTENCE.split(example.context):
            end = offset + len(sentence)
            if not any(start < end and offset < stop for start, stop in spans):
                kept.append(sentence)
            offset = end
        context = "".join(kept).strip()
        if len(context) < min_chars or any(text in context for text, _ in example.answers):
            continue
        negatives.append(_unanswerable(example, context, "removed", example.article, example.title))
    return negatives


def _unanswerable(
    example: ReadingExample, context: str, kind: str, article: str, title: str
) -> ReadingExample:
    """`example`'s question over `context` (of `article`, titled `title`), which does not answer it."""
    return ReadingExample(
        qid=f"{example.qid}:{kind}",
        question=example.question,
        context=context,
        answers=(),
        source=f"{kind}:{example.source}",
        article=article,
        title=title,
    )


def fold(text: str) -> tuple[str, list[int]]:
    """`text` with whitespace removed and each character NFKC-folded (as the eval set
    compares keywords), and for each folded character the offset it came from."""
    folded, origin = [], []
    for offset, character in enumerate(text):
        for piece in unicodedata.normalize("NFKC", character):
            if not piece.isspace():
                folded.append(piece)
                origin.append(offset)
    return "".join(folded), origin


def covering_span(context: str, keywords: Iterable[str], max_length: int = 160) -> tuple[str, int] | None:
    """The shortest stretch of `context` holding every keyword (compared folded, so line
    breaks inside a sentence do not hide one), or None when one is missing or the stretch
    is longer than `max_length` characters."""
    folded, origin = fold(context)
    keywords = [fold(keyword)[0] for keyword in keywords if keyword]
    keywords = [keyword for keyword in keywords if keyword]
    if not keywords or any(keyword not in folded for keyword in keywords):
        return None
    best: tuple[int, int] | None = None
    for anchor in _occurrences(folded, keywords[0]):
        start, end = anchor, anchor + len(keywords[0])
        for keyword in keywords[1:]:
            nearest = min(
                _occurrences(folded, keyword),
                key=lambda at: max(end, at + len(keyword)) - min(start, at),
            )
            start, end = min(start, nearest), max(end, nearest + len(keyword))
        if best is None or end - start < best[1] - best[0]:
            best = (start, end)
    assert best is not None
    start, end = origin[best[0]], origin[best[1] - 1] + 1
    if end - start > max_length:
        return None
    return context[start:end], start


def mentions_any(context: str, keywords: Iterable[str]) -> bool:
    folded = fold(context)[0]
    return any(fold(keyword)[0] in folded for keyword in keywords if keyword)


def _occurrences(text: str, needle: str) -> list[int]:
    found, positions = text.find(needle), []
    while found != -1:
        positions.append(found)
        found = text.find(needle, found + 1)
    return positions
