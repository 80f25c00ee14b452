"""The QA facade: question (and conversation) in, cited extractive `Answer` out."""

from __future__ import annotations

import logging
import re
import threading
import time
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import replace
from functools import lru_cache

from corpus.models import Document
from corpus.settings import Settings
from index import Index
from index.models import Hit
from qa.answer import Answerer, AnswerRules, Extract
from qa.errors import QuestionError
from qa.followup import resolve
from qa.models import Answer, Citation, PassageRetriever
from qa.reader import Reader

NOT_FOUND = "知识库中没有找到与该问题直接相关的内容。下面列出最接近的段落，仅供参考。"
NOT_CHINESE = "目前仅支持中文提问，请用中文描述您的问题。(Please ask in Chinese.)"
TRADITIONAL_CONVERTED = "已将繁体字转换为简体字后检索。"
# Statuses a user must see next to a citation; documents with these are not "in force".

logger = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_CJK = re.compile(r"[\u4e00-\u9fff]")


@lru_cache(maxsize=1)
def _traditional_to_simplified():
    import opencc

    return opencc.OpenCC("t2s")


def clean_question(text: str, limit: int, what: str = "问题", field: str = "question") -> str:
    """Normalise user input: control characters dropped, whitespace collapsed.

    :raises QuestionError: empty, or longer than `limit` characters.
    """
    if not isinstance(text, str):
        raise QuestionError(f"{what}必须是文本。", "invalid", field)
    text = _CONTROL.sub("", unicodedata.normalize("NFC", text))
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        raise QuestionError(f"{what}不能为空，请输入您想了解的政策问题。", "empty", field)
    if len(text) > limit:
        raise QuestionError(f"{what}过长（最多 {limit} 字），请精简后再问。", "too_long", field)
    return text


class Assistant:
    """Loaded once, then `ask` may be called from many threads at once (it keeps no
    per-call state; the index's searches and the reader are thread-safe).

    The retriever and the reader are the two seams: `load` builds the real ones (hybrid
    retrieval over `index`, the shipped reader); tests of the UI may pass fast fakes."""

    def __init__(self, index: Index, settings: Settings, retriever: PassageRetriever, reader: Reader):
        self.index = index
        self.settings = settings
        self.retriever = retriever
        self.reader = reader
        self.answerer = Answerer(
            reader,
            index.chunks,
            read_passages=settings.qa.read_passages,
            max_sentences=settings.qa.max_answer_sentences,
            rules=AnswerRules(
                list_enumeration=settings.qa.list_enumeration,
                table_rows=settings.qa.table_rows,
                compound_questions=settings.qa.compound_questions,
                second_passage_ratio=settings.qa.second_passage_ratio,
                early_exit=settings.qa.reader_early_exit,
                year_check=settings.qa.year_check,
                unknown_names=settings.qa.refuse_unknown_names,
            ),
        )
        self._documents = {document.doc_id: document for document in index.documents}

    @classmethod
    def load(cls, settings: Settings) -> "Assistant":
        """:raises index.IndexLoadError: no index at settings.index.index_dir, or a mismatched one.
        :raises qa.reader.ReaderError: the reader model cannot be loaded."""
        return cls.over(Index.load(settings.index.index_dir, settings), settings)

    @classmethod
    def over(cls, index: Index, settings: Settings, reader: Reader | None = None) -> "Assistant":
        """The assistant with the real retriever over `index` and the configured reader
        (loaded once per process and model directory)."""
        from qa.retrieve import Retriever

        reader = reader or shared_reader(settings.qa.reader_model)
        return cls(index, settings, Retriever(index, settings), reader)

    @property
    def documents(self) -> list[Document]:
        return list(self._documents.values())

    def in_force_doc_ids(self) -> set[str]:
        """Documents that count as in force (`Status.in_force`): not drafts, excerpts,
        superseded, expired or research; a document without a status counts."""
        return {doc_id for doc_id, doc in self._documents.items() if doc.in_force}

    def ask(
        self,
        question: str,
        history: Sequence[str] = (),
        *,
        top_k: int | None = None,
        documents: Collection[str] | None = None,
        in_force_only: bool = False,
    ) -> Answer:
        """Answer `question`, resolving it against `history` (earlier user questions)
        when it is a follow-up.

        :raises QuestionError: empty or over-long question or history, unknown document id.
        """
        started = time.perf_counter()
        settings = self.settings
        question = clean_question(question, settings.qa.max_question_chars)
        history = self._clean_history(history)
        top_k = top_k or settings.qa.top_k
        if not 1 <= top_k <= 50:
            raise QuestionError("top_k 必须在 1 到 50 之间。", "invalid", "top_k")
        doc_ids = self._document_filter(documents, in_force_only)

        notice = None
        if not _CJK.search(question):
            notice = NOT_CHINESE
        elif (simplified := _traditional_to_simplified().convert(question)) != question:
            question, notice = simplified, TRADITIONAL_CONVERTED
            history = [_traditional_to_simplified().convert(turn) for turn in history]

        resolved = resolve(question, history)
        hits = self.retriever.run(resolved.query, top_k, doc_ids)
        extract = self.answerer.extract(question, resolved.reader_question, hits)
        verified = tuple(s for s in extract.sentences if self._verbatim(s))
        if verified != extract.sentences:
            logger.error("dropped answer sentences that are not verbatim in their source")
            extract = replace(extract, sentences=verified)
        answered = notice != NOT_CHINESE and self._is_supported(extract)
        # A refused answer highlights nothing: the closest passages are shown as they are.
        shown = extract if answered else replace(extract, sentences=(), spans=())
        passages = tuple(self._passage(hit, shown) for hit in hits[:top_k])
        if answered:
            text, citations, span = extract.text, self._citations(extract, hits), extract.span
        else:
            text, citations, span = (notice if notice == NOT_CHINESE else NOT_FOUND), (), None
        return Answer(
            answer=text,
            answered=answered,
            query=resolved.query,
            understood_as=resolved.reader_question,
            citations=citations,
            passages=passages,
            latency_ms=(time.perf_counter() - started) * 1000,
            question=question,
            span=span,
            notice=notice,
            confidence=extract.confidence,
            extra={"evidence_score": extract.confidence, "kind": extract.kind.value, "missing": list(extract.missing)},
        )

    def _is_supported(self, extract: Extract) -> bool:
        return (
            bool(extract.sentences)
            and not extract.missing
            and extract.confidence >= self.settings.qa.refusal_threshold
        )

    def _clean_history(self, history: Sequence[str]) -> list[str]:
        if isinstance(history, str):
            history = [history]
        if len(history) > self.settings.qa.max_history_turns:
            raise QuestionError(
                f"对话历史过长（最多 {self.settings.qa.max_history_turns} 轮），请点击“清空对话”后重新提问。",
                "history_too_long",
                "history",
            )
        cleaned = []
        for turn in history:
            try:
                cleaned.append(
                    clean_question(turn, self.settings.qa.max_question_chars, "历史问题", "history")
                )
            except QuestionError as error:
                if error.code != "empty":
                    raise QuestionError(error.message, "history_too_long", "history") from None
        return cleaned

    def _document_filter(
        self, documents: Collection[str] | None, in_force_only: bool
    ) -> set[str] | None:
        chosen: set[str] | None = None
        if documents:
            unknown = sorted(set(documents) - set(self._documents))
            if unknown:
                # Name a few, shortened: enough to fix the call, never an echo of a huge input.
                shown = "、".join(doc_id[:20] for doc_id in unknown[:3])
                more = f" 等 {len(unknown)} 个" if len(unknown) > 3 else ""
                raise QuestionError(
                    f"未知的文档编号：{shown}{more}。可用的文档见 GET /api/documents。",
                    "unknown_document",
                    "documents",
                )
            chosen = set(documents)
        if in_force_only:
            chosen = (chosen if chosen is not None else set(self._documents)) & self.in_force_doc_ids()
        return chosen

    def _note(self, doc_id: str) -> str | None:
        document = self._documents.get(doc_id)
        if document is None:
            return None
        return document.status.note if document.status else None

    def _passage(self, hit: Hit, extract: Extract) -> Citation:
        return self._citation(hit.chunk, hit.score, _highlights(hit.chunk.chunk_id, extract))

    def _citation(self, chunk, score: float, highlights) -> Citation:
        return Citation(
            title=chunk.title,
            section=chunk.section,
            quote=chunk.text,
            source_file=chunk.source_file,
            doc_id=chunk.doc_id,
            chunk_id=chunk.chunk_id,
            score=score,
            highlights=tuple(highlights),
            note=self._note(chunk.doc_id),
        )

    def _verbatim(self, sentence) -> bool:
        """The quoted sentence must be the very characters at its place in the source
        document (or, when the index keeps no document text, in its chunk)."""
        chunk = sentence.chunk
        document = self._documents.get(chunk.doc_id)
        if document is not None and document.text:
            start = chunk.char_span[0] + sentence.span[0]
            return document.text[start : start + len(sentence.text)] == sentence.text
        return bool(sentence.text) and sentence.text in chunk.text

    def _citations(self, extract: Extract, hits: Sequence[Hit]) -> tuple[Citation, ...]:
        """One citation per chunk the answer quotes, in answer order."""
        scores = {hit.chunk.chunk_id: hit.score for hit in hits}
        chunks = {}
        for sentence in extract.sentences:
            chunks.setdefault(sentence.chunk.chunk_id, sentence.chunk)
        return tuple(
            self._citation(chunk, scores.get(chunk_id, 0.0), _highlights(chunk_id, extract))
            for chunk_id, chunk in chunks.items()
        )


def _highlights(chunk_id: str, extract: Extract) -> tuple[tuple[int, int], ...]:
    """What a passage highlights: the answer span where it holds it, else the sentences
    it contributes to the answer."""
    spans = tuple((s.start, s.end) for s in extract.spans if s.chunk_id == chunk_id)
    return spans or tuple(s.span for s in extract.sentences if s.chunk.chunk_id == chunk_id)


_readers_lock = threading.Lock()
_readers: dict[str, Reader] = {}


def shared_reader(model_dir=None) -> Reader:
    """The span reader for `model_dir` (default: the shipped one), loaded once per process."""
    from qa.reader import SHIPPED_READER, SpanReader

    key = str(model_dir or SHIPPED_READER)
    with _readers_lock:
        if key not in _readers:
            _readers[key] = SpanReader(model_dir or SHIPPED_READER)
        return _readers[key]
