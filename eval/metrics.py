"""Evaluation metrics: pure functions on plain data, no QA or index imports.

Matching is done on normalised text: NFKC (full-width letters and digits become half-width),
lowercase, every whitespace character removed; CMRC matching also removes punctuation.

Evidence rule. A retrieved passage (or a cited quote) "contains the evidence" when its
normalised text contains the normalised evidence quote, or when the two share one contiguous
run of characters at least `MIN_OVERLAP_FRACTION` of the quote's length or at least
`MIN_OVERLAP_CHARS` characters long. The second clause exists because a chunk boundary may
cut a labelled quote in two: the passage then holds only part of it, and a citation quotes
only the sentence(s) it needs.
"""

from __future__ import annotations

import math
import re
import statistics
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

MIN_OVERLAP_FRACTION = 0.6
MIN_OVERLAP_CHARS = 20

_WHITESPACE = re.compile(r"\s+")


def is_punctuation(char: str) -> bool:
    """Unicode punctuation (P*) and symbols (S*): the official CMRC list (，。《》「」-:_*^/~+=
    ...) is a subset of these, and removing the rest too only makes matching more lenient."""
    return unicodedata.category(char)[0] in "PS"


def normalize(text: str, drop_punctuation: bool = False) -> str:
    """NFKC, lowercase, whitespace removed (and punctuation too when asked)."""
    text = _WHITESPACE.sub("", unicodedata.normalize("NFKC", text).lower())
    if drop_punctuation:
        text = "".join(char for char in text if not is_punctuation(char))
    return text


def longest_common_run(first: str, second: str) -> int:
    """Length of the longest contiguous substring the two strings share."""
    if not first or not second:
        return 0
    matcher = SequenceMatcher(None, first, second, autojunk=False)
    return matcher.find_longest_match(0, len(first), 0, len(second)).size


def overlaps_quote(text: str, quote: str) -> bool:
    """True when `text` contains `quote`, or shares a long enough contiguous run with it
    (see the module docstring for the rule)."""
    normal_text, normal_quote = normalize(text), normalize(quote)
    if not normal_quote or not normal_text:
        return False
    if normal_quote in normal_text:
        return True
    run = longest_common_run(normal_text, normal_quote)
    return run >= MIN_OVERLAP_FRACTION * len(normal_quote) or run >= MIN_OVERLAP_CHARS


def evidence_rank(passages: Sequence[str], quotes: Sequence[str]) -> int | None:
    """1-based rank of the first passage that contains (or overlaps) any evidence quote."""
    for rank, passage in enumerate(passages, start=1):
        if any(overlaps_quote(passage, quote) for quote in quotes):
            return rank
    return None


def hit_at_k(ranks: Sequence[int | None], k: int) -> float | None:
    """Share of items whose evidence rank is at most k; None for no items."""
    if not ranks:
        return None
    return sum(1 for rank in ranks if rank is not None and rank <= k) / len(ranks)


def mean_reciprocal_rank(ranks: Sequence[int | None]) -> float | None:
    """Mean of 1/rank, a miss counting 0; None for no items."""
    if not ranks:
        return None
    return sum(1.0 / rank for rank in ranks if rank) / len(ranks)


def keywords_found(answer: str, keywords: Sequence[str], expected_answer: str = "") -> bool:
    """True when every keyword occurs in the normalised answer. Items labelled without
    keywords fall back to the expected answer occurring as a whole."""
    normal_answer = normalize(answer)
    required = [normalize(k) for k in keywords if normalize(k)]
    if not required:
        required = [normalize(expected_answer)] if normalize(expected_answer) else []
    if not required:
        return False
    return all(keyword in normal_answer for keyword in required)


def citation_matches(
    citations: Iterable[tuple[str, str]], evidence: Iterable[tuple[str, str]]
) -> bool:
    """True when one (doc_id, quote) citation names an evidence document and its quote
    overlaps that evidence's quote under the evidence rule."""
    evidence = list(evidence)
    return any(
        cited_doc == doc_id and overlaps_quote(cited_quote, quote)
        for cited_doc, cited_quote in citations
        for doc_id, quote in evidence
    )


@dataclass(frozen=True)
class RefusalScores:
    precision: float | None  # refused items that were unanswerable / refused items
    recall: float | None  # unanswerable items refused / unanswerable items
    wrongly_refused: float | None  # answerable items refused / answerable items


def refusal_scores(answerable: Sequence[bool], refused: Sequence[bool]) -> RefusalScores:
    """Refusal precision and recall on unanswerable items, and the rate of wrongly refused
    answerable items; a ratio with an empty denominator is None."""
    if len(answerable) != len(refused):
        raise ValueError("answerable and refused must have the same length")
    pairs = list(zip(answerable, refused))
    refused_count = sum(1 for _, was_refused in pairs if was_refused)
    unanswerable_count = sum(1 for is_answerable, _ in pairs if not is_answerable)
    answerable_count = len(pairs) - unanswerable_count
    correct_refusals = sum(1 for a, r in pairs if r and not a)
    wrong_refusals = sum(1 for a, r in pairs if r and a)
    return RefusalScores(
        precision=_ratio(correct_refusals, refused_count),
        recall=_ratio(correct_refusals, unanswerable_count),
        wrongly_refused=_ratio(wrong_refusals, answerable_count),
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _ratio(numerator: int | float, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


@dataclass(frozen=True)
class ItemResult:
    """What one configuration did with one eval item, judged. Plain data, JSON-ready."""

    item_id: str
    split: str
    type: str
    style: str
    question: str
    history: tuple[str, ...]
    answerable: bool
    expected_answer: str
    keywords: tuple[str, ...]
    answered: bool
    answer: str
    span: str | None
    query: str
    cited_doc_ids: tuple[str, ...]
    cited_sections: tuple[str, ...]
    evidence_rank: int | None  # None: unanswerable item, or evidence not in the passages
    answer_correct: bool
    citation_correct: bool
    top_score: float | None  # score of the top retrieved passage, for refusal tuning
    latency_ms: float
    error: str | None = None  # the QuestionError message when the question was rejected

    @property
    def refused(self) -> bool:
        return not self.answered

    def to_dict(self) -> dict:
        return {
            "id": self.item_id,
            "split": self.split,
            "type": self.type,
            "style": self.style,
            "question": self.question,
            "history": list(self.history),
            "answerable": self.answerable,
            "expected_answer": self.expected_answer,
            "keywords": list(self.keywords),
            "answered": self.answered,
            "answer": self.answer,
            "span": self.span,
            "query": self.query,
            "cited_doc_ids": list(self.cited_doc_ids),
            "cited_sections": list(self.cited_sections),
            "evidence_rank": self.evidence_rank,
            "answer_correct": self.answer_correct,
            "citation_correct": self.citation_correct,
            "top_score": self.top_score,
            "latency_ms": round(self.latency_ms, 3),
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ItemResult":
        return cls(
            item_id=data["id"],
            split=data["split"],
            type=data["type"],
            style=data["style"],
            question=data["question"],
            history=tuple(data.get("history", ())),
            answerable=bool(data["answerable"]),
            expected_answer=data.get("expected_answer", ""),
            keywords=tuple(data.get("keywords", ())),
            answered=bool(data["answered"]),
            answer=data.get("answer", ""),
            span=data.get("span"),
            query=data.get("query", ""),
            cited_doc_ids=tuple(data.get("cited_doc_ids", ())),
            cited_sections=tuple(data.get("cited_sections", ())),
            evidence_rank=data.get("evidence_rank"),
            answer_correct=bool(data["answer_correct"]),
            citation_correct=bool(data["citation_correct"]),
            top_score=data.get("top_score"),
            latency_ms=float(data.get("latency_ms", 0.0)),
            error=data.get("error"),
        )


@dataclass(frozen=True)
class ConfigMetrics:
    """The summary row of one configuration. A ratio with no items to average is None."""

    config: str
    items: int
    answerable: int
    unanswerable: int
    hit_at_1: float | None
    hit_at_3: float | None
    hit_at_5: float | None
    mrr: float | None
    answer_accuracy: float | None
    citation_accuracy: float | None
    refusal_precision: float | None
    refusal_recall: float | None
    wrongly_refused: float | None
    median_answer_chars: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None


def summarize(config: str, results: Sequence[ItemResult]) -> ConfigMetrics:
    """The metrics of one configuration over its judged items."""
    answerable = [r for r in results if r.answerable]
    ranks = [r.evidence_rank for r in answerable]
    refusals = refusal_scores([r.answerable for r in results], [r.refused for r in results])
    answer_lengths = [len(r.answer) for r in results if r.answered]
    latencies = [r.latency_ms for r in results if r.error is None]
    return ConfigMetrics(
        config=config,
        items=len(results),
        answerable=len(answerable),
        unanswerable=len(results) - len(answerable),
        hit_at_1=hit_at_k(ranks, 1),
        hit_at_3=hit_at_k(ranks, 3),
        hit_at_5=hit_at_k(ranks, 5),
        mrr=mean_reciprocal_rank(ranks),
        answer_accuracy=_ratio(sum(r.answer_correct for r in answerable), len(answerable)),
        citation_accuracy=_ratio(sum(r.citation_correct for r in answerable), len(answerable)),
        refusal_precision=refusals.precision,
        refusal_recall=refusals.recall,
        wrongly_refused=refusals.wrongly_refused,
        median_answer_chars=statistics.median(answer_lengths) if answer_lengths else None,
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
    )


def accuracy_by(
    results: Sequence[ItemResult], key: Callable[[ItemResult], str]
) -> dict[str, tuple[float, int]]:
    """Answer accuracy of answerable items grouped by `key` (e.g. type or style):
    group -> (accuracy, number of items)."""
    groups: dict[str, list[ItemResult]] = {}
    for result in results:
        if result.answerable:
            groups.setdefault(key(result), []).append(result)
    return {
        name: (sum(r.answer_correct for r in members) / len(members), len(members))
        for name, members in sorted(groups.items())
    }


@dataclass(frozen=True)
class ThresholdPoint:
    """What refusing every item whose top evidence score is below `threshold` would give."""

    threshold: float
    refusal_recall: float | None
    wrongly_refused: float | None
    answer_accuracy: float | None


def refusal_sweep(
    results: Sequence[ItemResult], thresholds: Sequence[float] | None = None
) -> list[ThresholdPoint]:
    """Re-run only the cheap refusal decision at each threshold: an item stays refused if the
    system refused it, and is also refused when its top score falls below the threshold.
    Thresholds default to every distinct top score seen: the lowest refuses nothing more,
    since an item is refused only when its score is strictly below the threshold."""
    if thresholds is None:
        thresholds = sorted({r.top_score for r in results if r.top_score is not None})
    points = []
    for threshold in thresholds:
        refused = [
            r.refused or (r.top_score is not None and r.top_score < threshold) for r in results
        ]
        scores = refusal_scores([r.answerable for r in results], refused)
        answerable_count = sum(r.answerable for r in results)
        correct = sum(
            1 for r, was_refused in zip(results, refused)
            if r.answerable and r.answer_correct and not was_refused
        )
        points.append(
            ThresholdPoint(
                threshold=float(threshold),
                refusal_recall=scores.recall,
                wrongly_refused=scores.wrongly_refused,
                answer_accuracy=_ratio(correct, answerable_count),
            )
        )
    return points


def refusal_frontier(points: Sequence[ThresholdPoint]) -> list[ThresholdPoint]:
    """The points worth choosing from, in threshold order: the first, and each lowest
    threshold that raises refusal recall (a higher threshold at the same recall only
    refuses more answerable items)."""
    kept: list[ThresholdPoint] = []
    for point in sorted(points, key=lambda p: p.threshold):
        best = kept[-1].refusal_recall if kept else None
        if not kept or (point.refusal_recall or 0.0) > (best or 0.0):
            kept.append(point)
    return kept


def cmrc_segments(text: str) -> list[str]:
    """The official CMRC 2018 segmentation with punctuation removed: each CJK character is a
    segment, other runs split into words (letters/digits) on whitespace and punctuation."""
    segments: list[str] = []
    run = ""
    for char in unicodedata.normalize("NFKC", text).lower():
        if char.isspace() or is_punctuation(char):
            if run:
                segments.append(run)
                run = ""
        elif "\u4e00" <= char <= "\u9fa5" or unicodedata.east_asian_width(char) == "W":
            if run:
                segments.append(run)
                run = ""
            segments.append(char)
        else:
            run += char
    if run:
        segments.append(run)
    return segments


def _longest_common_segment_run(first: list[str], second: list[str]) -> int:
    if not first or not second:
        return 0
    matcher = SequenceMatcher(None, first, second, autojunk=False)
    return matcher.find_longest_match(0, len(first), 0, len(second)).size


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the prediction equals any gold answer with punctuation and whitespace
    removed, else 0.0 (the official CMRC EM)."""
    normal_prediction = normalize(prediction, drop_punctuation=True)
    return float(any(normal_prediction == normalize(g, drop_punctuation=True) for g in golds))


def char_f1(prediction: str, golds: Sequence[str]) -> float:
    """Best F1 over the gold answers, as the official CMRC script computes it: precision and
    recall of the longest common run of segments (characters for Chinese, words otherwise)."""
    predicted = cmrc_segments(prediction)
    best = 0.0
    for gold in golds:
        expected = cmrc_segments(gold)
        common = _longest_common_segment_run(predicted, expected)
        if common == 0:
            continue
        precision, recall = common / len(predicted), common / len(expected)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def contains_any(text: str, golds: Sequence[str]) -> bool:
    """True when the text, punctuation and whitespace removed, contains any gold answer."""
    normal_text = normalize(text, drop_punctuation=True)
    return any(
        normal_gold and normal_gold in normal_text
        for normal_gold in (normalize(g, drop_punctuation=True) for g in golds)
    )
